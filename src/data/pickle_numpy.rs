//! The callables a numpy pickle uses (`REDUCE`) and the state updates it applies
//! (`BUILD`). Part of the `pickle` module; see its docs for what is supported.

use std::cell::RefCell;
use std::rc::Rc;

use super::{Array, Dtype, Value, Vm, R};

fn is_numpy(module: &str, sub: &str) -> bool {
    module == format!("numpy.core.{sub}") || module == format!("numpy._core.{sub}")
}

impl Vm<'_> {
    fn tuple_args(&self, args: &Value, what: &str) -> R<Rc<Vec<Value>>> {
        match args {
            Value::Tuple(t) => Ok(t.clone()),
            other => self.err(format!(
                "{what}: arguments must be a tuple, found {}",
                other.type_name()
            )),
        }
    }

    fn shape_of(&self, v: &Value) -> R<Vec<usize>> {
        let items: Vec<Value> = match v {
            Value::Tuple(t) => t.to_vec(),
            Value::List(l) => l.borrow().clone(),
            Value::Int(_) => vec![v.clone()],
            other => return self.err(format!("array shape is a {}", other.type_name())),
        };
        items
            .iter()
            .map(|x| match x {
                Value::Int(i) if *i >= 0 => Ok(*i as usize),
                _ => self.err("array shape entries must be non-negative ints"),
            })
            .collect()
    }

    fn dtype_of(&self, v: &Value) -> R<Dtype> {
        match v {
            Value::Dtype(d) => Ok(d.borrow().clone()),
            Value::Str(_) | Value::Bytes(_) => Ok(Dtype::parse(&v.as_text().unwrap_or_default())),
            other => self.err(format!(
                "expected a numpy dtype, found {}",
                other.type_name()
            )),
        }
    }

    /// Apply a callable (`REDUCE`).
    pub(super) fn reduce(&mut self, func: Value, args: Value) -> R<Value> {
        let Value::Global(g) = &func else {
            return self.err(format!("REDUCE on a {}", func.type_name()));
        };
        let (module, name) = (g.0.as_str(), g.1.as_str());
        let args = self.tuple_args(&args, &format!("{module}.{name}"))?;
        match (module, name) {
            (m, "_reconstruct") if is_numpy(m, "multiarray") => {
                // _reconstruct(ndarray, shape, dtype_char): an empty array filled by BUILD.
                Ok(Value::Array(Rc::new(RefCell::new(Array {
                    dtype: Dtype::parse("|u1"),
                    shape: vec![0],
                    fortran: false,
                    data: Rc::new(Vec::new()),
                }))))
            }
            (m, "_frombuffer") if is_numpy(m, "numeric") => {
                // _frombuffer(buffer, dtype, shape, order)
                if args.len() != 4 {
                    return self.err("_frombuffer expects 4 arguments");
                }
                let Value::Bytes(data) = &args[0] else {
                    return self.err("_frombuffer: buffer is not bytes");
                };
                let dtype = self.dtype_of(&args[1])?;
                let shape = self.shape_of(&args[2])?;
                let fortran = args[3].as_text().as_deref() == Some("F");
                Ok(Value::Array(Rc::new(RefCell::new(Array {
                    dtype,
                    shape,
                    fortran,
                    data: data.clone(),
                }))))
            }
            ("numpy", "dtype") => {
                let Some(code) = args.first().and_then(Value::as_text) else {
                    return self.err("numpy.dtype: first argument must be a type string");
                };
                Ok(Value::Dtype(Rc::new(RefCell::new(Dtype::parse(&code)))))
            }
            (m, "scalar") if is_numpy(m, "multiarray") => {
                // scalar(dtype, raw_bytes) -> numpy scalar; integers only here.
                if args.len() != 2 {
                    return self.err("numpy scalar expects 2 arguments");
                }
                let dtype = self.dtype_of(&args[0])?;
                let Value::Bytes(raw) = &args[1] else {
                    return self.err("numpy scalar: value is not bytes");
                };
                match dtype.int_at(raw) {
                    Some(v) => Ok(Value::Int(v)),
                    None => self.err(format!("unsupported numpy scalar type {}", dtype.code)),
                }
            }
            ("_codecs", "encode") => {
                // How Python 3 pickles bytes at protocol 2: _codecs.encode(text, "latin1").
                let text = match args.first() {
                    Some(Value::Str(s)) => s.clone(),
                    _ => return self.err("_codecs.encode: first argument must be a str"),
                };
                let enc = args.get(1).and_then(Value::as_text).unwrap_or_default();
                if !matches!(enc.as_str(), "latin1" | "latin-1" | "iso-8859-1") {
                    return self.err(format!("_codecs.encode with encoding {enc:?}"));
                }
                let mut out = Vec::with_capacity(text.len());
                for ch in text.chars() {
                    match u8::try_from(ch as u32) {
                        Ok(b) => out.push(b),
                        Err(_) => return self.err("latin1-encoded text has a char above U+00FF"),
                    }
                }
                Ok(Value::Bytes(Rc::new(out)))
            }
            ("builtins" | "__builtin__", "bytearray") => match args.first() {
                None => Ok(Value::Bytes(Rc::default())),
                Some(Value::Bytes(b)) => Ok(Value::Bytes(b.clone())),
                Some(Value::Str(_)) => {
                    let func = Value::Global(Rc::new(("_codecs".into(), "encode".into())));
                    self.reduce(func, Value::Tuple(args.clone()))
                }
                Some(other) => self.err(format!("bytearray of a {}", other.type_name())),
            },
            _ => self.err(format!(
                "unsupported callable {module}.{name} (only numpy arrays, dtypes and scalars \
                 are understood)"
            )),
        }
    }

    /// Apply a `BUILD` state to the object on top of the stack.
    pub(super) fn build(&mut self, target: Value, state: Value) -> R<()> {
        match target {
            Value::Array(a) => {
                let Value::Tuple(st) = &state else {
                    return self.err("ndarray state is not a tuple");
                };
                // (version, shape, dtype, is_fortran, data) or, old style, without version.
                let st: &[Value] = match st.len() {
                    5 => &st[1..],
                    4 => &st[..],
                    n => return self.err(format!("ndarray state has {n} items, expected 5")),
                };
                let shape = self.shape_of(&st[0])?;
                let dtype = self.dtype_of(&st[1])?;
                let fortran = matches!(st[2], Value::Bool(true) | Value::Int(1));
                let data = match &st[3] {
                    Value::Bytes(b) => b.clone(),
                    Value::Str(s) => {
                        let func = Value::Global(Rc::new(("_codecs".into(), "encode".into())));
                        let args = vec![Value::Str(s.clone()), Value::Str(Rc::from("latin1"))];
                        match self.reduce(func, Value::Tuple(Rc::new(args)))? {
                            Value::Bytes(b) => b,
                            _ => unreachable!("_codecs.encode returns bytes"),
                        }
                    }
                    other => {
                        return self.err(format!(
                            "ndarray data is a {} (object arrays are not supported)",
                            other.type_name()
                        ))
                    }
                };
                *a.borrow_mut() = Array {
                    dtype,
                    shape,
                    fortran,
                    data,
                };
                Ok(())
            }
            Value::Dtype(d) => {
                // (version, byteorder, subarray, names, fields, elsize, alignment, flags)
                if let Value::Tuple(st) = &state {
                    if let Some(bo) = st.get(1).and_then(Value::as_text) {
                        if let Some(c) = bo.chars().next() {
                            d.borrow_mut().byteorder = c;
                        }
                    }
                }
                Ok(())
            }
            other => self.err(format!("BUILD on a {}", other.type_name())),
        }
    }
}
