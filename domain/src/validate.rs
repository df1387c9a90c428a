//! Checks on client-supplied JSON: size and nesting depth.

use serde_json::{Map, Value};

use crate::Limits;

/// Why client data was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// Serialized data is larger than the limit.
    #[error("data is {size} bytes, more than the limit of {max}")]
    TooLarge {
        /// Serialized size in bytes.
        size: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// Objects and arrays nest deeper than the limit.
    #[error("data nests deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
}

/// Nesting depth of a JSON value: a scalar is 0, `{}` is 1, `{"a": []}` is 2.
pub fn depth(value: &Value) -> usize {
    // Iterative, so that hostile input cannot overflow the stack here.
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Object(map) => {
                deepest = deepest.max(d + 1);
                stack.extend(map.values().map(|c| (c, d + 1)));
            }
            Value::Array(items) => {
                deepest = deepest.max(d + 1);
                stack.extend(items.iter().map(|c| (c, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// Checks a `data` object against the size and depth limits.
///
/// # Errors
/// [`DataError::TooDeep`] or [`DataError::TooLarge`].
pub fn check_data(data: &Map<String, Value>, limits: &Limits) -> Result<(), DataError> {
    let value = Value::Object(data.clone());
    if depth(&value) > limits.max_depth {
        return Err(DataError::TooDeep { max: limits.max_depth });
    }
    let size = serialized_len(&value);
    if size > limits.max_data_bytes {
        return Err(DataError::TooLarge {
            size,
            max: limits.max_data_bytes,
        });
    }
    Ok(())
}

/// Length in bytes of the compact JSON serialization of `value`.
pub fn serialized_len(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a Value into a counter cannot fail; a failure would only undercount, never panic.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn depth_counts_containers() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({})), 1);
        assert_eq!(depth(&json!({"a": [1, {"b": 2}]})), 3);
    }

    #[test]
    fn data_over_the_depth_limit_is_refused() {
        let mut v = json!(1);
        for _ in 0..32 {
            v = json!({ "a": v });
        }
        let Value::Object(ok) = v.clone() else { unreachable!() };
        assert_eq!(check_data(&ok, &Limits::default()), Ok(()));
        let Value::Object(deep) = json!({ "a": v }) else {
            unreachable!()
        };
        assert_eq!(
            check_data(&deep, &Limits::default()),
            Err(DataError::TooDeep { max: 32 })
        );
    }

    #[test]
    fn data_over_the_size_limit_is_refused() {
        let limits = Limits {
            max_data_bytes: 20,
            ..Limits::default()
        };
        let Value::Object(big) = json!({"text": "0123456789abcdef"}) else {
            unreachable!()
        };
        assert!(matches!(
            check_data(&big, &limits),
            Err(DataError::TooLarge { max: 20, .. })
        ));
    }
}
