//! A serde adapter that writes every sequence of `u8` as one byte string.
//!
//! Why: OpenMLS's state types hold their keys, credentials and hashes in `Vec<u8>` fields
//! without `serde_bytes`, so a serde format sees them as sequences of integers. CBOR then writes
//! a header per byte and `ciborium` pushes them one at a time; a profile of an add commit at
//! 1000 members put about half of the whole operation in that loop (docs/BENCHMARKS.md). Written
//! as a CBOR byte string (major type 2) the same field is one header and one copy.
//!
//! Reading needs nothing special: `ciborium` decodes a byte string where a sequence is expected
//! (its `deserialize_seq` accepts both), so values written before this adapter existed still
//! decode. Everything except sequences of `u8` is forwarded unchanged to the wrapped serializer,
//! so the output differs from plain `ciborium` only in those sequences.
//!
//! A sequence is recognised by its first element: if that element serialises as exactly one
//! `u8`, the adapter collects bytes; should a later element turn out not to be a `u8` (no type
//! in OpenMLS does this, but serde allows it), the collected bytes are replayed as ordinary
//! elements and the sequence is written as an array. Collected bytes may be key material, so the
//! buffer zeroizes on drop.

use std::fmt;

use serde::ser::{
    self, Impossible, Serialize, SerializeMap, SerializeSeq, SerializeStruct,
    SerializeStructVariant, SerializeTuple, SerializeTupleStruct, SerializeTupleVariant,
    Serializer,
};
use zeroize::Zeroizing;

/// Wraps a serializer so that every sequence of `u8` becomes one byte string.
struct ByteStrings<S>(S);

/// A value serialised through [`ByteStrings`]: hand this to any serde format (how the top-level
/// value and every nested one stay wrapped).
pub(crate) struct Wrapped<'a, T: ?Sized>(pub(crate) &'a T);

impl<T: Serialize + ?Sized> Serialize for Wrapped<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(ByteStrings(serializer))
    }
}

macro_rules! forward {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method(self, value: $ty) -> Result<S::Ok, S::Error> {
                self.0.$method(value)
            }
        )*
    };
}

impl<S: Serializer> Serializer for ByteStrings<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Sequence<S>;
    type SerializeTuple = Compound<S::SerializeTuple>;
    type SerializeTupleStruct = Compound<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<S::SerializeTupleVariant>;
    type SerializeMap = Compound<S::SerializeMap>;
    type SerializeStruct = Compound<S::SerializeStruct>;
    type SerializeStructVariant = Compound<S::SerializeStructVariant>;

    forward!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_none()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&Wrapped(value))
    }

    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit_variant(name, index, variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, &Wrapped(value))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_variant(name, index, variant, &Wrapped(value))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Sequence<S>, S::Error> {
        Ok(Sequence::new(self.0, len))
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len).map(Compound)
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.0.serialize_tuple_struct(name, len).map(Compound)
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.0
            .serialize_tuple_variant(name, index, variant, len)
            .map(Compound)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        self.0.serialize_map(len).map(Compound)
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.0.serialize_struct(name, len).map(Compound)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.0
            .serialize_struct_variant(name, index, variant, len)
            .map(Compound)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// Tuples, structs, maps and variants: forwarded, with their fields wrapped.
struct Compound<C>(C);

impl<C: SerializeTuple> SerializeTuple for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.0.serialize_element(&Wrapped(value))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

impl<C: SerializeTupleStruct> SerializeTupleStruct for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.0.serialize_field(&Wrapped(value))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

impl<C: SerializeTupleVariant> SerializeTupleVariant for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.0.serialize_field(&Wrapped(value))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

impl<C: SerializeMap> SerializeMap for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), C::Error> {
        self.0.serialize_key(&Wrapped(key))
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.0.serialize_value(&Wrapped(value))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

impl<C: SerializeStruct> SerializeStruct for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), C::Error> {
        self.0.serialize_field(key, &Wrapped(value))
    }
    fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
        self.0.skip_field(key)
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

impl<C: SerializeStructVariant> SerializeStructVariant for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), C::Error> {
        self.0.serialize_field(key, &Wrapped(value))
    }
    fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
        self.0.skip_field(key)
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

/// A sequence whose form (byte string or array) is decided by its elements.
///
/// Laid out for the hot path: a byte of a byte sequence is one probe and one push.
struct Sequence<S: Serializer> {
    /// The serializer, until the sequence is written as an array (or finished).
    serializer: Option<S>,
    len: Option<usize>,
    /// Every element so far, while all of them were one `u8`.
    bytes: Zeroizing<Vec<u8>>,
    /// Set once an element was not a `u8`: the sequence is an ordinary array.
    array: Option<S::SerializeSeq>,
}

impl<S: Serializer> Sequence<S> {
    fn new(serializer: S, len: Option<usize>) -> Self {
        Self {
            serializer: Some(serializer),
            len,
            bytes: Zeroizing::new(Vec::new()),
            array: None,
        }
    }

    /// Switches to an array, replaying the bytes collected so far, and writes `value`.
    #[cold]
    fn start_array<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        let serializer = self.serializer.take().ok_or_else(used_after_end)?;
        let mut array = serializer.serialize_seq(self.len)?;
        for byte in self.bytes.iter() {
            array.serialize_element(byte)?;
        }
        array.serialize_element(&Wrapped(value))?;
        self.array = Some(array);
        Ok(())
    }
}

fn used_after_end<E: ser::Error>() -> E {
    E::custom("a sequence was written after it failed")
}

impl<S: Serializer> SerializeSeq for Sequence<S> {
    type Ok = S::Ok;
    type Error = S::Error;

    #[inline]
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        match self.array.as_mut() {
            Some(array) => array.serialize_element(&Wrapped(value)),
            None => match value.serialize(SingleByte) {
                Ok(byte) => {
                    if self.bytes.is_empty() {
                        self.bytes.reserve(self.len.unwrap_or(0));
                    }
                    self.bytes.push(byte);
                    Ok(())
                }
                Err(NotAByte) => self.start_array(value),
            },
        }
    }

    fn end(mut self) -> Result<S::Ok, S::Error> {
        if let Some(array) = self.array.take() {
            return array.end();
        }
        let serializer = self.serializer.take().ok_or_else(used_after_end)?;
        if self.bytes.is_empty() {
            serializer.serialize_seq(self.len)?.end()
        } else {
            serializer.serialize_bytes(&self.bytes)
        }
    }
}

/// The answer of [`SingleByte`] for anything that is not exactly one `u8`.
#[derive(Debug)]
struct NotAByte;

impl fmt::Display for NotAByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a single u8")
    }
}

impl std::error::Error for NotAByte {}

impl ser::Error for NotAByte {
    fn custom<T: fmt::Display>(_: T) -> Self {
        NotAByte
    }
}

/// Serializes a value only if it is exactly one `u8`.
struct SingleByte;

macro_rules! not_a_byte {
    ($($method:ident($($arg:ty),*)),* $(,)?) => {
        $(
            fn $method(self, $(_: $arg),*) -> Result<u8, NotAByte> {
                Err(NotAByte)
            }
        )*
    };
}

impl Serializer for SingleByte {
    type Ok = u8;
    type Error = NotAByte;
    type SerializeSeq = Impossible<u8, NotAByte>;
    type SerializeTuple = Impossible<u8, NotAByte>;
    type SerializeTupleStruct = Impossible<u8, NotAByte>;
    type SerializeTupleVariant = Impossible<u8, NotAByte>;
    type SerializeMap = Impossible<u8, NotAByte>;
    type SerializeStruct = Impossible<u8, NotAByte>;
    type SerializeStructVariant = Impossible<u8, NotAByte>;

    #[inline]
    fn serialize_u8(self, value: u8) -> Result<u8, NotAByte> {
        Ok(value)
    }

    not_a_byte!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotAByte> {
        Err(NotAByte)
    }
}
