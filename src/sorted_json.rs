//! JSON with every object's keys in sorted order, written straight from a `Serialize` value.
//!
//! rdprobe's JSON lines have always had sorted keys: they were made by building a
//! `serde_json::Value` tree (whose objects are sorted maps) and writing it. That tree was a fifth of
//! `analyze`'s time on a large capture (every fact cloned, every key allocated). This serializer
//! writes the same bytes without it: scalars, strings and arrays go out as serde_json formats them,
//! and an object's members are written to a scratch arena as they come, then copied out in key
//! order. Hand-written because no crate writes serde_json's exact formatting with sorted keys
//! (canonical-JSON crates format numbers the RFC 8785 way, which changes `1.0` to `1`).
//!
//! Equal keys keep the last value, as a sorted map would. A map key must be a string, a number or
//! a bool (as for `serde_json::to_value`); numbers and bools become their text.

use serde::ser::{self, Impossible, Serialize};
use std::fmt::Display;

/// Why a value could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

impl ser::Error for Error {
    fn custom<T: Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// `value` as JSON with sorted object keys, appended to `out`.
pub fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), Error> {
    let mut w = Writer {
        buf: std::mem::take(out),
        keys: Vec::new(),
        members: Vec::new(),
        key_scratch: String::new(),
    };
    let r = value.serialize(&mut w);
    *out = w.buf;
    r
}

/// `value` as a JSON string with sorted object keys.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String, Error> {
    let mut out = Vec::with_capacity(4096);
    write(&mut out, value)?;
    // INVARIANT: only serde_json's string escaping and ASCII punctuation are written.
    String::from_utf8(out).map_err(|e| Error(e.to_string()))
}

/// One member of an object being written: its key (a range of `Writer::keys`) and where its
/// `"key":value` text lies in `Writer::buf`.
#[derive(Clone, Copy)]
struct Member {
    key: (usize, usize),
    text: (usize, usize),
}

pub struct Writer {
    /// The output; an open object's members sit at its end in the order they came until the
    /// object is closed.
    buf: Vec<u8>,
    /// The raw (unescaped) keys of the open objects' members, for sorting.
    keys: Vec<u8>,
    /// The members of the open objects, innermost last.
    members: Vec<Member>,
    /// Reused for map keys.
    key_scratch: String,
}

impl Writer {
    fn json<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        serde_json::to_writer(&mut self.buf, v).map_err(|e| Error(e.to_string()))
    }

    /// A JSON string, as serde_json writes it. Most strings need no escape: those are copied
    /// between quotes; the others are left to serde_json. (serde_json escapes exactly the bytes
    /// below 0x20, `"` and `\\`, so the copy is the same text.)
    fn string(&mut self, v: &str) -> Result<(), Error> {
        if needs_escape(v.as_bytes()) {
            return self.json(v);
        }
        self.buf.reserve(v.len() + 2);
        self.buf.push(b'"');
        self.buf.extend_from_slice(v.as_bytes());
        self.buf.push(b'"');
        Ok(())
    }

    fn open(&mut self) -> Object<'_> {
        let start = self.buf.len();
        self.buf.push(b'{');
        Object {
            start,
            first_member: self.members.len(),
            keys_start: self.keys.len(),
            in_order: true,
            w: self,
        }
    }

    /// `{"name":` of a variant with content (a one-member object: nothing to sort).
    fn open_variant(&mut self, name: &str) -> Result<(), Error> {
        self.buf.push(b'{');
        self.string(name)?;
        self.buf.push(b':');
        Ok(())
    }
}

/// Whether JSON escapes any byte of `b` (a control character, `"` or `\\`). Checked 16 bytes at a
/// time without an early exit, which the compiler turns into vector compares.
fn needs_escape(b: &[u8]) -> bool {
    let chunks = b.chunks_exact(16);
    let tail = chunks.remainder();
    let esc = |c: u8| c < 0x20 || c == b'"' || c == b'\\';
    chunks
        .into_iter()
        .any(|c| c.iter().fold(false, |acc, &x| acc | esc(x)))
        || tail.iter().any(|&x| esc(x))
}

/// An object (struct, map, struct variant's content) being written: its members are written as
/// they come; if they did not come in key order, they are rewritten in key order at the end.
pub struct Object<'a> {
    w: &'a mut Writer,
    /// Where the object's `{` is in `buf`.
    start: usize,
    first_member: usize,
    keys_start: usize,
    /// Every key so far was greater than the one before (so far nothing to rewrite).
    in_order: bool,
}

impl<'a> Object<'a> {
    fn member<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Error> {
        let w = &mut *self.w;
        if let Some(prev) = w.members[self.first_member..].last() {
            if w.keys[prev.key.0..prev.key.1] >= *key.as_bytes() {
                self.in_order = false;
            }
            w.buf.push(b',');
        }
        let k0 = w.keys.len();
        w.keys.extend_from_slice(key.as_bytes());
        let k1 = w.keys.len();
        let t0 = w.buf.len();
        w.string(key)?;
        w.buf.push(b':');
        value.serialize(&mut *w)?;
        let t1 = w.buf.len();
        w.members.push(Member {
            key: (k0, k1),
            text: (t0, t1),
        });
        Ok(())
    }

    /// Ends the object, rewriting its members in key order if they came out of order.
    fn close(self) -> Result<&'a mut Writer, Error> {
        let w = self.w;
        if self.in_order {
            w.buf.push(b'}');
        } else {
            let mut members = w.members.split_off(self.first_member);
            let keys = &w.keys;
            let key = |m: &Member| &keys[m.key.0..m.key.1];
            // Stable: among equal keys the last written stays last, and is the one kept.
            members.sort_by(|a, b| key(a).cmp(key(b)));
            let end = w.buf.len();
            w.buf.push(b'{');
            let mut first = true;
            for (i, m) in members.iter().enumerate() {
                if members.get(i + 1).is_some_and(|n| key(n) == key(m)) {
                    continue;
                }
                if !first {
                    w.buf.push(b',');
                }
                first = false;
                w.buf.extend_from_within(m.text.0..m.text.1);
            }
            w.buf.push(b'}');
            w.buf.copy_within(end.., self.start);
            let len = w.buf.len() - end;
            w.buf.truncate(self.start + len);
        }
        w.members.truncate(self.first_member);
        w.keys.truncate(self.keys_start);
        Ok(w)
    }
}

/// A sequence being written.
pub struct Seq<'a> {
    w: &'a mut Writer,
    first: bool,
}

impl<'a> Seq<'a> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        if !self.first {
            self.w.buf.push(b',');
        }
        self.first = false;
        value.serialize(&mut *self.w)
    }

    fn close(self) -> &'a mut Writer {
        self.w.buf.push(b']');
        self.w
    }
}

/// A map being written: an object whose keys come one call before their values.
pub struct MapWriter<'a> {
    object: Object<'a>,
    /// The key given by the last `serialize_key` (the writer's scratch, taken while a map is open).
    key: Option<String>,
}

/// A variant with content, `{"Variant": content}`, around its sequence or object.
pub struct Variant<I> {
    inner: I,
}

macro_rules! json_scalars {
    ($($f:ident: $t:ty),*) => {
        $(fn $f(self, v: $t) -> Result<(), Error> {
            self.json(&v)
        })*
    };
}

impl<'a> ser::Serializer for &'a mut Writer {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Seq<'a>;
    type SerializeTupleStruct = Seq<'a>;
    type SerializeTupleVariant = Variant<Seq<'a>>;
    type SerializeMap = MapWriter<'a>;
    type SerializeStruct = Object<'a>;
    type SerializeStructVariant = Variant<Object<'a>>;

    json_scalars!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_char: char);

    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        // As a Value holds it: widened to f64, NaN and infinities as null.
        self.json(&serde_json::Value::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        self.json(&serde_json::Value::from(v))
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.string(v)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        self.json(v)
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.buf.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), Error> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.serialize_none()
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        self.serialize_none()
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        name: &'static str,
    ) -> Result<(), Error> {
        self.string(name)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        name: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        self.open_variant(name)?;
        v.serialize(&mut *self)?;
        self.buf.push(b'}');
        Ok(())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Seq<'a>, Error> {
        self.buf.push(b'[');
        Ok(Seq {
            w: self,
            first: true,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Seq<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        name: &'static str,
        len: usize,
    ) -> Result<Variant<Seq<'a>>, Error> {
        self.open_variant(name)?;
        Ok(Variant {
            inner: self.serialize_seq(Some(len))?,
        })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<MapWriter<'a>, Error> {
        Ok(MapWriter {
            object: self.open(),
            key: None,
        })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Object<'a>, Error> {
        Ok(self.open())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        name: &'static str,
        _: usize,
    ) -> Result<Variant<Object<'a>>, Error> {
        self.open_variant(name)?;
        Ok(Variant { inner: self.open() })
    }
}

/// The three serde traits of a JSON array (a sequence, a tuple, a tuple struct) differ only in
/// their method's name: each element is written with `Seq::element`, the end closes the array.
macro_rules! array_writer {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Seq<'_> {
            type Ok = ();
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
                self.element(v)
            }
            fn end(self) -> Result<(), Error> {
                self.close();
                Ok(())
            }
        }
    )*};
}

array_writer!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field
);

impl ser::SerializeTupleVariant for Variant<Seq<'_>> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.inner.element(v)
    }
    fn end(self) -> Result<(), Error> {
        self.inner.close().buf.push(b'}');
        Ok(())
    }
}

impl ser::SerializeStruct for Object<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        self.member(key, v)
    }
    fn end(self) -> Result<(), Error> {
        self.close().map(|_| ())
    }
}

impl ser::SerializeStructVariant for Variant<Object<'_>> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        self.inner.member(key, v)
    }
    fn end(self) -> Result<(), Error> {
        self.inner.close()?.buf.push(b'}');
        Ok(())
    }
}

impl ser::SerializeMap for MapWriter<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        // One scratch string for every key of every map: no allocation per key.
        let mut text = self
            .key
            .take()
            .unwrap_or_else(|| std::mem::take(&mut self.object.w.key_scratch));
        text.clear();
        key.serialize(KeyText(&mut text))?;
        self.key = Some(text);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        let key = self
            .key
            .take()
            .ok_or_else(|| Error("a map value without its key".into()))?;
        let r = self.object.member(&key, v);
        self.object.w.key_scratch = key;
        r
    }
    fn end(self) -> Result<(), Error> {
        self.object.close().map(|_| ())
    }
}

/// A map key as text, written into the string it holds: strings as they are, numbers and bools as
/// their JSON text.
struct KeyText<'a>(&'a mut String);

fn key_error() -> Error {
    Error("key must be a string".into())
}

macro_rules! key_as_text {
    ($($f:ident: $t:ty),*) => {
        $(fn $f(self, v: $t) -> Result<(), Error> {
            use std::fmt::Write;
            write!(self.0, "{v}").map_err(|e| Error(e.to_string()))
        })*
    };
}

macro_rules! key_refused {
    ($($f:ident $(: $t:ty)?),*) => {
        $(fn $f(self $(, _: $t)?) -> Result<(), Error> {
            Err(key_error())
        })*
    };
}

impl ser::Serializer for KeyText<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Impossible<(), Error>;
    type SerializeTuple = Impossible<(), Error>;
    type SerializeTupleStruct = Impossible<(), Error>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStruct = Impossible<(), Error>;
    type SerializeStructVariant = Impossible<(), Error>;

    key_as_text!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_char: char);
    key_refused!(serialize_f32: f32, serialize_f64: f64, serialize_bytes: &[u8], serialize_none,
        serialize_unit);

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.0.push_str(v);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Error> {
        Err(key_error())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        Err(key_error())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        name: &'static str,
    ) -> Result<(), Error> {
        self.0.push_str(name);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Error> {
        Err(key_error())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(key_error())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(key_error())
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(key_error())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(key_error())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(key_error())
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        Err(key_error())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(key_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use std::collections::{BTreeMap, HashMap};

    /// What the Value tree writes: the reference this module must equal.
    fn via_value<T: Serialize>(v: &T) -> String {
        serde_json::to_string(&serde_json::to_value(v).unwrap()).unwrap()
    }

    #[derive(Serialize)]
    #[serde(tag = "status", rename_all = "snake_case")]
    enum Tagged {
        Ok,
        Failed { why: String, at: u32 },
        Inner(Inner),
    }

    #[derive(Serialize)]
    struct Inner {
        zeta: f64,
        alpha: Option<u8>,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u8>,
        mid: Vec<(u8, String)>,
    }

    #[derive(Serialize)]
    enum External {
        Unit,
        New(u32),
        Tuple(u8, bool),
        Struct { b: u8, a: u8 },
    }

    #[derive(Serialize)]
    struct Outer {
        z: Vec<Tagged>,
        y: BTreeMap<String, serde_json::Value>,
        x: HashMap<u16, &'static str>,
        w: Vec<External>,
        v: (),
        u: char,
        t: f32,
        s: f64,
        #[serde(rename = "é\"q")]
        r: i64,
        a: bool,
    }

    fn sample() -> Outer {
        let mut y = BTreeMap::new();
        y.insert(
            "pdus".into(),
            serde_json::json!(["client: a", "server: \u{1}b"]),
        );
        y.insert(
            "b".into(),
            serde_json::json!({"z": 1, "a": [1.5, null, {"y": 2, "x": 3}]}),
        );
        Outer {
            z: vec![
                Tagged::Ok,
                Tagged::Failed {
                    why: "tab\there".into(),
                    at: 7,
                },
                Tagged::Inner(Inner {
                    zeta: 1.0,
                    alpha: None,
                    skipped: None,
                    mid: vec![(1, "x".into())],
                }),
            ],
            y,
            x: [(10, "ten"), (2, "two"), (33, "x")].into_iter().collect(),
            w: vec![
                External::Unit,
                External::New(3),
                External::Tuple(1, false),
                External::Struct { b: 2, a: 1 },
            ],
            v: (),
            u: 'c',
            t: 0.1,
            s: f64::NAN,
            r: -5,
            a: true,
        }
    }

    #[test]
    fn equals_the_value_tree_on_every_serde_shape() {
        let s = sample();
        assert_eq!(to_string(&s).unwrap(), via_value(&s));
    }

    #[test]
    fn keys_come_out_sorted_and_nested_objects_too() {
        let s = to_string(&sample()).unwrap();
        let a = s.find("\"a\":true").unwrap();
        let z = s.find("\"z\":[").unwrap();
        assert!(a < z, "{s}");
        assert!(
            s.contains(r#"{"at":7,"status":"failed","why":"tab\there"}"#),
            "{s}"
        );
    }

    #[test]
    fn appends_to_what_is_already_written() {
        let mut out = b"[1,".to_vec();
        write(
            &mut out,
            &Inner {
                zeta: 2.5,
                alpha: Some(1),
                skipped: Some(2),
                mid: vec![],
            },
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"[1,{"alpha":1,"mid":[],"skipped":2,"zeta":2.5}"#
        );
    }

    /// A tree whose objects keep their members in the order given (repeats allowed).
    #[derive(Clone, Debug)]
    enum Node {
        Leaf(i64),
        Array(Vec<Node>),
        Object(Vec<(String, Node)>),
    }

    impl Serialize for Node {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::{SerializeMap, SerializeSeq};
            match self {
                Node::Leaf(v) => s.serialize_i64(*v),
                Node::Array(a) => {
                    let mut seq = s.serialize_seq(Some(a.len()))?;
                    for n in a {
                        seq.serialize_element(n)?;
                    }
                    seq.end()
                }
                Node::Object(o) => {
                    let mut map = s.serialize_map(Some(o.len()))?;
                    for (k, v) in o {
                        map.serialize_entry(k, v)?;
                    }
                    map.end()
                }
            }
        }
    }

    fn node() -> impl proptest::strategy::Strategy<Value = Node> {
        use proptest::prelude::*;
        let leaf = any::<i64>().prop_map(Node::Leaf);
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Node::Array),
                proptest::collection::vec(("[a-e]{0,2}", inner), 0..6).prop_map(Node::Object),
            ]
        })
    }

    proptest::proptest! {
        /// Objects out of order inside objects out of order, at any depth, with repeated keys.
        #[test]
        fn nested_objects_in_any_order_equal_the_value_tree(n in node(), before in "[0-9]{0,3}") {
            proptest::prop_assert_eq!(to_string(&n).unwrap(), via_value(&n));
            let mut out = before.clone().into_bytes();
            write(&mut out, &n).unwrap();
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), before + &via_value(&n));
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them_wherever_the_byte_is() {
        for c in (0u8..0x80)
            .map(char::from)
            .chain(['é', '\u{2028}', '\u{7f}'])
        {
            for at in 0..40 {
                let s: String = "a".repeat(at) + &c.to_string() + "b";
                assert_eq!(to_string(&s).unwrap(), serde_json::to_string(&s).unwrap());
            }
        }
    }

    #[test]
    fn a_map_with_a_non_text_key_is_refused() {
        let m: BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into_iter().collect();
        assert!(to_string(&m).is_err());
        assert!(serde_json::to_value(&m).is_err());
    }

    #[test]
    fn equals_the_value_tree_on_every_fixture_report_and_diagnosis() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/captures");
        let mut reports = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let file = std::fs::File::open(&path).unwrap();
            let opts = crate::capture::reader::ReaderOptions::default();
            for trace in crate::capture::reader::read_conversations(file, opts).unwrap() {
                let r = crate::decode::decode_report(&trace.unwrap());
                assert_eq!(to_string(&r).unwrap(), via_value(&r), "{}", path.display());
                let d = crate::diagnose::diagnose(&r);
                assert_eq!(to_string(&d).unwrap(), via_value(&d), "{}", path.display());
                reports += 1;
            }
        }
        assert!(reports >= 12, "only {reports} reports in {}", dir.display());
    }
}
