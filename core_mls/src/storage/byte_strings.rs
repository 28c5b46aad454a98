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

use serde::ser::{
    self, Serialize, SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant,
    SerializeTuple, SerializeTupleStruct, SerializeTupleVariant, Serializer,
};
use zeroize::Zeroizing;

use super::split_layout::{
    ByteProbe, ContextProbe, EPOCH_FIELD, EPOCH_TREE, LEAVES_FIELD, NumberProbe, OtherShape,
    SECRETS_FIELD, Split, SplitList, TreeFields, list_hash,
};

/// Wraps a serializer so that every sequence of `u8` becomes one byte string (and, with a
/// [`Split`], past epochs' member lists are taken out).
struct ByteStrings<'a, S> {
    inner: S,
    split: Option<&'a Split<'a>>,
}

/// A value serialised through [`ByteStrings`]: hand this to any serde format (how the top-level
/// value and every nested one stay wrapped).
pub(crate) struct Wrapped<'a, T: ?Sized>(pub(crate) &'a T, pub(crate) Option<&'a Split<'a>>);

impl<T: Serialize + ?Sized> Serialize for Wrapped<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(ByteStrings {
            inner: serializer,
            split: self.1,
        })
    }
}

impl<'a> Split<'a> {
    /// `value`, to be serialised with this split.
    pub(crate) fn wrap<'v, T: ?Sized>(&'v self, value: &'v T) -> Wrapped<'v, T>
    where
        'a: 'v,
    {
        Wrapped(value, Some(self))
    }
}

macro_rules! forward {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method(self, value: $ty) -> Result<S::Ok, S::Error> {
                self.inner.$method(value)
            }
        )*
    };
}

impl<'a, S: Serializer> Serializer for ByteStrings<'a, S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Sequence<'a, S>;
    type SerializeTuple = Compound<'a, S::SerializeTuple>;
    type SerializeTupleStruct = Compound<'a, S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<'a, S::SerializeTupleVariant>;
    type SerializeMap = Compound<'a, S::SerializeMap>;
    type SerializeStruct = Compound<'a, S::SerializeStruct>;
    type SerializeStructVariant = Compound<'a, S::SerializeStructVariant>;

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
        self.inner.serialize_none()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.inner.serialize_some(&Wrapped(value, self.split))
    }

    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit_variant(name, index, variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.inner
            .serialize_newtype_struct(name, &Wrapped(value, self.split))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.inner
            .serialize_newtype_variant(name, index, variant, &Wrapped(value, self.split))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Sequence<'a, S>, S::Error> {
        Ok(Sequence::new(self.inner, len, self.split))
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        let split = self.split;
        self.inner
            .serialize_tuple(len)
            .map(|c| Compound::new(c, split))
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        let split = self.split;
        self.inner
            .serialize_tuple_struct(name, len)
            .map(|c| Compound::new(c, split))
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        let split = self.split;
        self.inner
            .serialize_tuple_variant(name, index, variant, len)
            .map(|c| Compound::new(c, split))
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        let split = self.split;
        self.inner
            .serialize_map(len)
            .map(|c| Compound::new(c, split))
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        let split = self.split;
        let mut compound = self
            .inner
            .serialize_struct(name, len)
            .map(|c| Compound::new(c, split))?;
        if split.is_some() && name == EPOCH_TREE {
            compound.tree = Some(TreeFields::default());
        }
        Ok(compound)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        let split = self.split;
        self.inner
            .serialize_struct_variant(name, index, variant, len)
            .map(|c| Compound::new(c, split))
    }

    /// `Vec<T>`, `VecDeque<T>` and slices come here: the loop over the elements is ours, so a
    /// byte of a byte sequence is one probe and one push on a buffer the loop keeps in
    /// registers ([`Sequence`], behind `&mut self`, was reloaded from memory on every byte:
    /// a sixth of an add commit at 1000 members). Writes what [`Sequence`] writes.
    fn collect_seq<I>(self, iter: I) -> Result<S::Ok, S::Error>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        let mut iter = iter.into_iter();
        let len = match iter.size_hint() {
            (lower, Some(upper)) if lower == upper => Some(lower),
            _ => None,
        };
        let mut bytes = Zeroizing::new(Vec::with_capacity(len.unwrap_or(0)));
        let first_other = loop {
            let Some(item) = iter.next() else {
                break None;
            };
            match item.serialize(ByteProbe) {
                Ok(byte) => bytes.push(byte),
                Err(OtherShape) => break Some(item),
            }
        };
        let Some(item) = first_other else {
            return if bytes.is_empty() {
                self.inner.serialize_seq(len)?.end()
            } else {
                self.inner.serialize_bytes(&bytes)
            };
        };
        let split = self.split;
        let mut array = self.inner.serialize_seq(len)?;
        for byte in bytes.iter() {
            array.serialize_element(byte)?;
        }
        array.serialize_element(&Wrapped(&item, split))?;
        for item in iter {
            array.serialize_element(&Wrapped(&item, split))?;
        }
        array.end()
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// Tuples, structs, maps and variants: forwarded, with their fields wrapped.
struct Compound<'a, C> {
    inner: C,
    split: Option<&'a Split<'a>>,
    /// Set while this is an `EpochTree` under a [`Split`]: what its fields told so far.
    tree: Option<TreeFields>,
}

impl<'a, C> Compound<'a, C> {
    fn new(inner: C, split: Option<&'a Split<'a>>) -> Self {
        Self {
            inner,
            split,
            tree: None,
        }
    }
}

impl<C: SerializeTuple> SerializeTuple for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.inner.serialize_element(&Wrapped(value, self.split))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: SerializeTupleStruct> SerializeTupleStruct for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.inner.serialize_field(&Wrapped(value, self.split))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: SerializeTupleVariant> SerializeTupleVariant for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.inner.serialize_field(&Wrapped(value, self.split))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: SerializeMap> SerializeMap for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), C::Error> {
        self.inner.serialize_key(&Wrapped(key, self.split))
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.inner.serialize_value(&Wrapped(value, self.split))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: SerializeStruct> SerializeStruct for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), C::Error> {
        if let (Some(tree), Some(split)) = (self.tree.as_mut(), self.split) {
            match key {
                EPOCH_FIELD => tree.epoch = value.serialize(NumberProbe).ok(),
                SECRETS_FIELD => {
                    tree.context_hash = value
                        .serialize(ContextProbe)
                        .ok()
                        .map(|context| list_hash(&context));
                }
                LEAVES_FIELD => {
                    if let (Some(epoch), Some(hash)) = (tree.epoch, tree.context_hash) {
                        return self.inner.serialize_field(
                            key,
                            &Placeholder {
                                split,
                                list: value,
                                epoch,
                                hash,
                            },
                        );
                    }
                }
                _ => {}
            }
        }
        self.inner.serialize_field(key, &Wrapped(value, self.split))
    }
    fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
        self.inner.skip_field(key)
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: SerializeStructVariant> SerializeStructVariant for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), C::Error> {
        self.inner.serialize_field(key, &Wrapped(value, self.split))
    }
    fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
        self.inner.skip_field(key)
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

/// Written where a member list was taken out: records the list (encoding it if it is not
/// known) and writes the one-byte placeholder.
struct Placeholder<'a, T: ?Sized> {
    split: &'a Split<'a>,
    list: &'a T,
    epoch: u64,
    hash: [u8; 32],
}

impl<T: Serialize + ?Sized> Serialize for Placeholder<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let seen = |hash: &[u8; 32]| self.split.lists.borrow().iter().any(|l| &l.hash == hash);
        let encoding = if (self.split.known)(&self.hash) || seen(&self.hash) {
            None
        } else {
            let mut out = Vec::new();
            ciborium::into_writer(&Wrapped(self.list, None), &mut out)
                .map_err(|_| ser::Error::custom("a member list does not serialise"))?;
            Some(out)
        };
        self.split.lists.borrow_mut().push(SplitList {
            offset: self.split.written.get(),
            hash: self.hash,
            epoch: self.epoch,
            encoding,
        });
        serializer.serialize_unit()
    }
}

/// A sequence whose form (byte string or array) is decided by its elements.
///
/// Laid out for the hot path: a byte of a byte sequence is one probe and one push.
struct Sequence<'a, S: Serializer> {
    /// The serializer, until the sequence is written as an array (or finished).
    serializer: Option<S>,
    split: Option<&'a Split<'a>>,
    len: Option<usize>,
    /// Every element so far, while all of them were one `u8`.
    bytes: Zeroizing<Vec<u8>>,
    /// Set once an element was not a `u8`: the sequence is an ordinary array.
    array: Option<S::SerializeSeq>,
}

impl<'a, S: Serializer> Sequence<'a, S> {
    fn new(serializer: S, len: Option<usize>, split: Option<&'a Split<'a>>) -> Self {
        Self {
            serializer: Some(serializer),
            split,
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
        array.serialize_element(&Wrapped(value, self.split))?;
        self.array = Some(array);
        Ok(())
    }
}

fn used_after_end<E: ser::Error>() -> E {
    E::custom("a sequence was written after it failed")
}

impl<S: Serializer> SerializeSeq for Sequence<'_, S> {
    type Ok = S::Ok;
    type Error = S::Error;

    #[inline]
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        match self.array.as_mut() {
            Some(array) => array.serialize_element(&Wrapped(value, self.split)),
            None => match value.serialize(ByteProbe) {
                Ok(byte) => {
                    if self.bytes.is_empty() {
                        self.bytes.reserve(self.len.unwrap_or(0));
                    }
                    self.bytes.push(byte);
                    Ok(())
                }
                Err(OtherShape) => self.start_array(value),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::VecDeque;

    use serde::ser::{Serialize, SerializeSeq, Serializer};

    use crate::storage::codec;

    /// Serialises its elements through `serialize_seq`, the path a type without `collect_seq`
    /// takes ([`super::Sequence`]).
    struct ElementByElement<'a, T>(&'a [T]);

    impl<T: Serialize> Serialize for ElementByElement<'_, T> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
            for element in self.0 {
                seq.serialize_element(element)?;
            }
            seq.end()
        }
    }

    fn both_paths<T: Serialize>(values: &[T]) -> (Vec<u8>, Vec<u8>) {
        (
            codec::encode(values).unwrap(),
            codec::encode(&ElementByElement(values)).unwrap(),
        )
    }

    #[test]
    fn collected_sequences_are_written_as_element_by_element_ones() {
        let bytes: Vec<u8> = (0..=255).collect();
        let (collected, by_element) = both_paths(&bytes);
        assert_eq!(collected, by_element);
        // One byte string: a header and the bytes, not a header per byte.
        assert_eq!(collected.len(), 3 + 256);

        let empty: Vec<u8> = Vec::new();
        let (collected, by_element) = both_paths(&empty);
        assert_eq!(collected, by_element);

        let nested = vec![vec![1u8, 2], Vec::new(), vec![3]];
        let (collected, by_element) = both_paths(&nested);
        assert_eq!(collected, by_element);

        let wide = vec![1u16, 300, 2];
        let (collected, by_element) = both_paths(&wide);
        assert_eq!(collected, by_element);

        let deque: VecDeque<u8> = bytes.iter().copied().collect();
        let encoded = codec::encode(&deque).unwrap();
        assert_eq!(encoded, codec::encode(&bytes).unwrap());
        assert_eq!(codec::decode::<Vec<u8>>("t", &encoded).unwrap(), bytes);
    }
}
