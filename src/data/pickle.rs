//! A minimal Python pickle reader for the numpy-array dicts of the ImageNet32 release.
//!
//! Supported: the binary opcodes of protocols 1-5 (plus the text `PUT`/`GET`/`INT`), i.e.
//! `None`/bools/ints/floats, `str` (unicode) and `bytes` (including Python 2 `str`, read as
//! bytes), tuples, lists, dicts, the memo, and these callables:
//! * `numpy.core.multiarray._reconstruct` / `numpy._core.multiarray._reconstruct` followed
//!   by `BUILD` with the state `(version, shape, dtype, is_fortran, raw_bytes)` (how
//!   `ndarray.__reduce__` pickles arrays at protocols 2-4);
//! * `numpy.core.numeric._frombuffer` / `numpy._core.numeric._frombuffer` (protocol 5,
//!   in-band buffers only);
//! * `numpy.dtype` (with its `BUILD` state giving the byte order);
//! * `numpy.core.multiarray.scalar` (numpy scalars, e.g. labels stored as `np.int64`);
//! * `_codecs.encode(str, "latin1")` (how Python 3 writes `bytes` at protocol 2) and
//!   `bytearray`.
//!
//! Anything else (other classes, protocol 0 strings, out-of-band buffers) is rejected with
//! an error giving the opcode and byte offset. Nothing is ever executed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A numpy dtype: type code such as `u1`, `i8`, `f4`, and byte order (`|`, `<`, `>`, `=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dtype {
    /// Kind letter and item size, e.g. `u1`, `i8`, `f8`.
    pub code: String,
    /// Byte order character.
    pub byteorder: char,
}

impl Dtype {
    /// Parse a numpy type string such as `|u1`, `<i8` or `u1`.
    pub fn parse(s: &str) -> Dtype {
        let mut chars = s.chars();
        match chars.next() {
            Some(c @ ('|' | '<' | '>' | '=')) => Dtype {
                code: chars.as_str().to_string(),
                byteorder: c,
            },
            _ => Dtype {
                code: s.to_string(),
                byteorder: '=',
            },
        }
    }

    /// Item size in bytes (0 if unknown).
    pub fn itemsize(&self) -> usize {
        self.code[1.min(self.code.len())..].parse().unwrap_or(0)
    }

    fn kind(&self) -> char {
        self.code.chars().next().unwrap_or('?')
    }

    /// Decode one element as an integer (ints, uints and bools only).
    pub fn int_at(&self, b: &[u8]) -> Option<i64> {
        let size = self.itemsize();
        if !matches!(self.kind(), 'i' | 'u' | 'b') || !(1..=8).contains(&size) || b.len() < size {
            return None;
        }
        let mut buf = [0u8; 8];
        if self.byteorder == '>' {
            for i in 0..size {
                buf[i] = b[size - 1 - i];
            }
        } else {
            buf[..size].copy_from_slice(&b[..size]);
        }
        if self.kind() == 'i' && buf[size - 1] & 0x80 != 0 {
            buf[size..].fill(0xff);
        }
        Some(i64::from_le_bytes(buf))
    }
}

/// A numpy array: dtype, shape, memory order and raw bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// True for Fortran (column-major) order.
    pub fortran: bool,
    /// Raw element bytes.
    pub data: Rc<Vec<u8>>,
}

impl Array {
    /// The elements as `i64`, if the dtype is an integer type and the length matches.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        let size = self.dtype.itemsize();
        let n: usize = self.shape.iter().product();
        if size == 0 || self.data.len() != n * size {
            return None;
        }
        self.data
            .chunks_exact(size)
            .map(|c| self.dtype.int_at(c))
            .collect()
    }
}

/// A decoded pickle value. Mutable containers are shared (`Rc<RefCell>`) so that memo
/// references see later `APPEND`/`SETITEM`/`BUILD` operations, as in Python.
#[derive(Clone, Debug)]
pub enum Value {
    /// `None`.
    None,
    /// A bool.
    Bool(bool),
    /// An int that fits in 64 bits.
    Int(i64),
    /// A float.
    Float(f64),
    /// A unicode string.
    Str(Rc<str>),
    /// `bytes` (or a Python 2 `str`).
    Bytes(Rc<Vec<u8>>),
    /// A tuple.
    Tuple(Rc<Vec<Value>>),
    /// A list.
    List(Rc<RefCell<Vec<Value>>>),
    /// A dict, as key/value pairs in insertion order.
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// A global reference `module.name` (only callables listed in the module docs).
    Global(Rc<(String, String)>),
    /// A numpy dtype.
    Dtype(Rc<RefCell<Dtype>>),
    /// A numpy array.
    Array(Rc<RefCell<Array>>),
}

impl Value {
    /// The text of a `str`, or of ASCII/UTF-8 `bytes` (Python 2 `str` keys).
    pub fn as_text(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.to_string()),
            Value::Bytes(b) => std::str::from_utf8(b).ok().map(str::to_string),
            _ => None,
        }
    }

    /// Look up a text key in a dict.
    pub fn get(&self, key: &str) -> Option<Value> {
        match self {
            Value::Dict(d) => d
                .borrow()
                .iter()
                .find(|(k, _)| k.as_text().as_deref() == Some(key))
                .map(|(_, v)| v.clone()),
            _ => None,
        }
    }

    /// Short type name for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Dtype(_) => "numpy dtype",
            Value::Array(_) => "numpy array",
        }
    }
}

/// A pickle decoding error: what went wrong and at which byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickleError {
    /// Byte offset of the opcode being decoded.
    pub offset: usize,
    /// Description.
    pub message: String,
}

impl std::fmt::Display for PickleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.message, self.offset)
    }
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    op_pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<usize, Value>,
}

type R<T> = std::result::Result<T, PickleError>;

/// Decode a pickle. Returns the top-level object.
pub fn load(data: &[u8]) -> R<Value> {
    let mut vm = Vm {
        data,
        pos: 0,
        op_pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    vm.run()
}

impl<'a> Vm<'a> {
    fn err<T>(&self, message: impl Into<String>) -> R<T> {
        Err(PickleError {
            offset: self.op_pos,
            message: message.into(),
        })
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        if self.data.len() - self.pos < n {
            return self.err(format!(
                "unexpected end of data (needed {n} more bytes, {} left)",
                self.data.len() - self.pos
            ));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> R<usize> {
        let b = self.take(n)?;
        let mut v = 0u64;
        for (i, &x) in b.iter().enumerate() {
            v |= (x as u64) << (8 * i);
        }
        usize::try_from(v).or_else(|_| self.err("length does not fit in memory"))
    }

    fn line(&mut self) -> R<&'a str> {
        let rest = &self.data[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return self.err("unterminated text argument");
        };
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).or_else(|_| self.err("non-UTF-8 text argument"))
    }

    fn pop(&mut self) -> R<Value> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return self.err("stack underflow (pop past a mark)");
        }
        match self.stack.pop() {
            Some(v) => Ok(v),
            None => self.err("stack underflow"),
        }
    }

    fn pop_mark(&mut self) -> R<Vec<Value>> {
        let Some(m) = self.marks.pop() else {
            return self.err("no mark on the stack");
        };
        if m > self.stack.len() {
            return self.err("corrupt mark");
        }
        Ok(self.stack.split_off(m))
    }

    fn top(&self) -> R<&Value> {
        match self.stack.last() {
            Some(v) => Ok(v),
            None => self.err("stack underflow"),
        }
    }

    fn text(&mut self, n: usize) -> R<Value> {
        let b = self.take(n)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(Value::Str(Rc::from(s))),
            Err(_) => self.err("invalid UTF-8 in a str"),
        }
    }

    fn bytes(&mut self, n: usize) -> R<Value> {
        Ok(Value::Bytes(Rc::new(self.take(n)?.to_vec())))
    }

    fn run(&mut self) -> R<Value> {
        loop {
            self.op_pos = self.pos;
            let op = self.take(1)?[0];
            match op {
                0x80 => {
                    let p = self.take(1)?[0];
                    if p > 5 {
                        return self.err(format!("unsupported pickle protocol {p}"));
                    }
                }
                0x95 => {
                    self.take(8)?;
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let b = self.take(4)?;
                    let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    self.stack.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.uint(1)?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.uint(2)?;
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.uint(1)?
                    } else {
                        self.uint(4)?
                    };
                    let b = self.take(n)?;
                    if n > 8 {
                        return self.err("integer wider than 64 bits");
                    }
                    let mut buf = [0u8; 8];
                    buf[..n].copy_from_slice(b);
                    if n > 0 && b[n - 1] & 0x80 != 0 {
                        buf[n..].fill(0xff);
                    }
                    self.stack.push(Value::Int(i64::from_le_bytes(buf)));
                }
                b'I' | b'L' => {
                    let s = self.line()?.trim_end_matches('L');
                    let v = match s {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        _ => match s.parse() {
                            Ok(v) => Value::Int(v),
                            Err(_) => return self.err(format!("bad integer literal {s:?}")),
                        },
                    };
                    self.stack.push(v);
                }
                b'G' => {
                    let b = self.take(8)?;
                    let v = f64::from_be_bytes(b.try_into().expect("8 bytes"));
                    self.stack.push(Value::Float(v));
                }
                b'X' => {
                    let n = self.uint(4)?;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.uint(1)?;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = self.uint(8)?;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                b'T' | b'B' => {
                    let n = self.uint(4)?;
                    let v = self.bytes(n)?;
                    self.stack.push(v);
                }
                b'U' | b'C' => {
                    let n = self.uint(1)?;
                    let v = self.bytes(n)?;
                    self.stack.push(v);
                }
                0x8e | 0x96 => {
                    let n = self.uint(8)?;
                    let v = self.bytes(n)?;
                    self.stack.push(v);
                }
                0x98 => {
                    self.top()?; // READONLY_BUFFER: no-op on an in-band buffer
                }
                0x97 => return self.err("out-of-band buffer (NEXT_BUFFER) is not supported"),
                b')' => self.stack.push(Value::Tuple(Rc::new(Vec::new()))),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                b']' => self.stack.push(Value::List(Rc::default())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(items))));
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'}' => self.stack.push(Value::Dict(Rc::default())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let d = Value::Dict(Rc::default());
                    self.stack.push(d);
                    self.set_items(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    self.stack.push(Value::Global(Rc::new((module, name))));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module.as_text(), name.as_text()) {
                        (Some(m), Some(n)) => self.stack.push(Value::Global(Rc::new((m, n)))),
                        _ => return self.err("STACK_GLOBAL needs two strings"),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.reduce(func, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    let state = self.pop()?;
                    let target = self.top()?.clone();
                    self.build(target, state)?;
                }
                b'q' | b'r' | 0x94 | b'p' => {
                    let idx = match op {
                        b'q' => self.uint(1)?,
                        b'r' => self.uint(4)?,
                        b'p' => match self.line()?.parse() {
                            Ok(i) => i,
                            Err(_) => return self.err("bad PUT index"),
                        },
                        _ => self.memo.len(),
                    };
                    let v = self.top()?.clone();
                    self.memo.insert(idx, v);
                }
                b'h' | b'j' | b'g' => {
                    let idx = match op {
                        b'h' => self.uint(1)?,
                        b'j' => self.uint(4)?,
                        _ => match self.line()?.parse() {
                            Ok(i) => i,
                            Err(_) => return self.err("bad GET index"),
                        },
                    };
                    match self.memo.get(&idx) {
                        Some(v) => {
                            let v = v.clone();
                            self.stack.push(v);
                        }
                        None => return self.err(format!("memo key {idx} is not defined")),
                    }
                }
                _ => {
                    return self.err(format!(
                        "unsupported pickle opcode 0x{op:02x} ({:?})",
                        op as char
                    ))
                }
            }
        }
    }

    fn append(&mut self, items: Vec<Value>) -> R<()> {
        match self.top()? {
            Value::List(l) => {
                l.borrow_mut().extend(items);
                Ok(())
            }
            other => self.err(format!("APPEND to a {}", other.type_name())),
        }
    }

    fn set_items(&mut self, items: Vec<Value>) -> R<()> {
        if items.len() % 2 != 0 {
            return self.err("odd number of dict items");
        }
        match self.top()? {
            Value::Dict(d) => {
                let mut d = d.borrow_mut();
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
                Ok(())
            }
            other => self.err(format!("SETITEM on a {}", other.type_name())),
        }
    }
}

#[path = "pickle_numpy.rs"]
mod numpy;
