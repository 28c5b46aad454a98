//! The part of OpenMLS's state layout that `epoch_members` relies on, and what the encoder
//! records while it takes member lists out.
//!
//! OpenMLS 0.9 (`group/mls_group/past_secrets.rs`, `schedule/message_secrets.rs`) serialises a
//! past epoch as a struct `EpochTree { epoch: u64, message_secrets: MessageSecrets, leaves:
//! Vec<Member> }`, with `MessageSecrets` a struct holding `serialized_context: Vec<u8>`. The
//! probes here read those two values out of a field while it is being serialised, and fail
//! (so nothing is split) on any other shape.

use std::cell::{Cell, RefCell};
use std::fmt;

use serde::ser::{self, Impossible, Serialize, SerializeSeq, SerializeStruct, Serializer};

/// The struct name of OpenMLS's past-epoch entry, and its fields in serialisation order.
pub(crate) const EPOCH_TREE: &str = "EpochTree";
pub(crate) const EPOCH_FIELD: &str = "epoch";
pub(crate) const SECRETS_FIELD: &str = "message_secrets";
pub(crate) const LEAVES_FIELD: &str = "leaves";
const MESSAGE_SECRETS: &str = "MessageSecrets";
const SERIALIZED_CONTEXT: &str = "serialized_context";

/// The hash that names a past epoch's member list: of that epoch's serialized `GroupContext`
/// (which holds the tree hash, so it names the list across forks too).
pub(crate) fn list_hash(serialized_context: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key("spacepanda epoch member list v1");
    hasher.update(serialized_context);
    *hasher.finalize().as_bytes()
}

/// What `epoch_members` needs while a message secrets store is encoded: where the output is,
/// which lists are stored already, and the lists found.
pub(crate) struct Split<'a> {
    /// Bytes written so far by the format (a list's placeholder is written at this offset).
    pub(crate) written: &'a Cell<usize>,
    /// Whether the list with this hash is stored already (then it is not encoded again).
    pub(crate) known: &'a dyn Fn(&[u8; 32]) -> bool,
    /// The lists taken out, in output order.
    pub(crate) lists: RefCell<Vec<SplitList>>,
}

/// One member list taken out of the output.
pub(crate) struct SplitList {
    /// Offset of its one-byte placeholder in the output.
    pub(crate) offset: usize,
    pub(crate) hash: [u8; 32],
    pub(crate) epoch: u64,
    /// Its encoding, unless it was known.
    pub(crate) encoding: Option<Vec<u8>>,
}

/// What an `EpochTree`'s earlier fields said, for its `leaves`.
#[derive(Default)]
pub(crate) struct TreeFields {
    pub(crate) epoch: Option<u64>,
    pub(crate) context_hash: Option<[u8; 32]>,
}

/// A probe's answer for any shape other than the one it looks for.
#[derive(Debug)]
pub(crate) struct OtherShape;

impl fmt::Display for OtherShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not the shape this probe looks for")
    }
}

impl std::error::Error for OtherShape {}

impl ser::Error for OtherShape {
    fn custom<T: fmt::Display>(_: T) -> Self {
        OtherShape
    }
}

/// Everything a probe does not look for is [`OtherShape`].
macro_rules! other_shape {
    ($ok:ty; $($method:ident($($arg:ty),*)),* $(,)?) => {
        $(
            fn $method(self, $(_: $arg),*) -> Result<$ok, OtherShape> {
                Err(OtherShape)
            }
        )*
    };
}

/// The rest of a probe's `Serializer` impl: every compound and wrapper is another shape,
/// except what the probe implements itself.
macro_rules! other_compounds {
    ($ok:ty) => {
        fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<$ok, OtherShape> {
            Err(OtherShape)
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<$ok, OtherShape> {
            Err(OtherShape)
        }
        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, OtherShape> {
            Err(OtherShape)
        }
        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleStruct, OtherShape> {
            Err(OtherShape)
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, OtherShape> {
            Err(OtherShape)
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, OtherShape> {
            Err(OtherShape)
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, OtherShape> {
            Err(OtherShape)
        }
    };
}

/// Reads a `u64` (the epoch).
pub(crate) struct NumberProbe;

impl Serializer for NumberProbe {
    type Ok = u64;
    type Error = OtherShape;
    type SerializeSeq = Impossible<u64, OtherShape>;
    type SerializeTuple = Impossible<u64, OtherShape>;
    type SerializeTupleStruct = Impossible<u64, OtherShape>;
    type SerializeTupleVariant = Impossible<u64, OtherShape>;
    type SerializeMap = Impossible<u64, OtherShape>;
    type SerializeStruct = Impossible<u64, OtherShape>;
    type SerializeStructVariant = Impossible<u64, OtherShape>;

    fn serialize_u64(self, value: u64) -> Result<u64, OtherShape> {
        Ok(value)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<u64, OtherShape> {
        value.serialize(self)
    }

    other_shape!(u64;
        serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
        serialize_i64(i64), serialize_i128(i128), serialize_u8(u8), serialize_u16(u16),
        serialize_u32(u32), serialize_u128(u128), serialize_f32(f32), serialize_f64(f64),
        serialize_char(char), serialize_str(&str), serialize_bytes(&[u8]), serialize_none(),
        serialize_unit(), serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );
    other_compounds!(u64);

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, OtherShape> {
        Err(OtherShape)
    }

    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, OtherShape> {
        Err(OtherShape)
    }
}

/// Reads the `serialized_context` of a `MessageSecrets` without serialising its other fields.
pub(crate) struct ContextProbe;

/// The fields of a `MessageSecrets`, looked through for its context.
pub(crate) struct ContextFields(Option<Vec<u8>>);

impl SerializeStruct for ContextFields {
    type Ok = Vec<u8>;
    type Error = OtherShape;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), OtherShape> {
        if key == SERIALIZED_CONTEXT {
            self.0 = Some(value.serialize(BytesProbe)?);
        }
        Ok(())
    }

    fn end(self) -> Result<Vec<u8>, OtherShape> {
        self.0.ok_or(OtherShape)
    }
}

impl Serializer for ContextProbe {
    type Ok = Vec<u8>;
    type Error = OtherShape;
    type SerializeSeq = Impossible<Vec<u8>, OtherShape>;
    type SerializeTuple = Impossible<Vec<u8>, OtherShape>;
    type SerializeTupleStruct = Impossible<Vec<u8>, OtherShape>;
    type SerializeTupleVariant = Impossible<Vec<u8>, OtherShape>;
    type SerializeMap = Impossible<Vec<u8>, OtherShape>;
    type SerializeStruct = ContextFields;
    type SerializeStructVariant = Impossible<Vec<u8>, OtherShape>;

    fn serialize_struct(self, name: &'static str, _: usize) -> Result<ContextFields, OtherShape> {
        if name == MESSAGE_SECRETS {
            Ok(ContextFields(None))
        } else {
            Err(OtherShape)
        }
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<Vec<u8>, OtherShape> {
        Err(OtherShape)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, OtherShape> {
        Err(OtherShape)
    }

    other_shape!(Vec<u8>;
        serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
        serialize_i64(i64), serialize_i128(i128), serialize_u8(u8), serialize_u16(u16),
        serialize_u32(u32), serialize_u64(u64), serialize_u128(u128), serialize_f32(f32),
        serialize_f64(f64), serialize_char(char), serialize_str(&str), serialize_bytes(&[u8]),
        serialize_none(), serialize_unit(), serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );
    other_compounds!(Vec<u8>);
}

/// Reads a byte sequence (`Vec<u8>`, or serde bytes).
struct BytesProbe;

/// The elements of a byte sequence.
struct Bytes(Vec<u8>);

impl SerializeSeq for Bytes {
    type Ok = Vec<u8>;
    type Error = OtherShape;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), OtherShape> {
        self.0.push(value.serialize(ByteProbe)?);
        Ok(())
    }

    fn end(self) -> Result<Vec<u8>, OtherShape> {
        Ok(self.0)
    }
}

impl Serializer for BytesProbe {
    type Ok = Vec<u8>;
    type Error = OtherShape;
    type SerializeSeq = Bytes;
    type SerializeTuple = Impossible<Vec<u8>, OtherShape>;
    type SerializeTupleStruct = Impossible<Vec<u8>, OtherShape>;
    type SerializeTupleVariant = Impossible<Vec<u8>, OtherShape>;
    type SerializeMap = Impossible<Vec<u8>, OtherShape>;
    type SerializeStruct = Impossible<Vec<u8>, OtherShape>;
    type SerializeStructVariant = Impossible<Vec<u8>, OtherShape>;

    fn serialize_bytes(self, value: &[u8]) -> Result<Vec<u8>, OtherShape> {
        Ok(value.to_vec())
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Bytes, OtherShape> {
        Ok(Bytes(Vec::with_capacity(len.unwrap_or(0))))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Vec<u8>, OtherShape> {
        value.serialize(self)
    }

    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, OtherShape> {
        Err(OtherShape)
    }

    other_shape!(Vec<u8>;
        serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
        serialize_i64(i64), serialize_i128(i128), serialize_u8(u8), serialize_u16(u16),
        serialize_u32(u32), serialize_u64(u64), serialize_u128(u128), serialize_f32(f32),
        serialize_f64(f64), serialize_char(char), serialize_str(&str), serialize_none(),
        serialize_unit(), serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );
    other_compounds!(Vec<u8>);
}

/// Reads one `u8` (the byte-string encoder's test of each element, so it is on the hot path).
pub(crate) struct ByteProbe;

impl Serializer for ByteProbe {
    type Ok = u8;
    type Error = OtherShape;
    type SerializeSeq = Impossible<u8, OtherShape>;
    type SerializeTuple = Impossible<u8, OtherShape>;
    type SerializeTupleStruct = Impossible<u8, OtherShape>;
    type SerializeTupleVariant = Impossible<u8, OtherShape>;
    type SerializeMap = Impossible<u8, OtherShape>;
    type SerializeStruct = Impossible<u8, OtherShape>;
    type SerializeStructVariant = Impossible<u8, OtherShape>;

    #[inline]
    fn serialize_u8(self, value: u8) -> Result<u8, OtherShape> {
        Ok(value)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<u8, OtherShape> {
        Err(OtherShape)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, OtherShape> {
        Err(OtherShape)
    }

    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, OtherShape> {
        Err(OtherShape)
    }

    other_shape!(u8;
        serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
        serialize_i64(i64), serialize_i128(i128), serialize_u16(u16), serialize_u32(u32),
        serialize_u64(u64), serialize_u128(u128), serialize_f32(f32), serialize_f64(f64),
        serialize_char(char), serialize_str(&str), serialize_bytes(&[u8]), serialize_none(),
        serialize_unit(), serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );
    other_compounds!(u8);
}
