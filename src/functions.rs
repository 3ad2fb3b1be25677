//! SQL functions brook adds to DataFusion.
//!
//! `split(text, delimiter)`: the parts of `text` between occurrences of
//! `delimiter`, as a list. Like `string_to_array(text, delimiter)`, but the
//! parts are views into `text`'s own buffers, so splitting copies no string
//! bytes. `unnest(split(line, ' '))` is brook's fast word split.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ByteView, ListArray, StringViewArray};
use datafusion::arrow::buffer::{OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The functions brook registers in every [`crate::StreamContext`].
pub(crate) fn all() -> Vec<ScalarUDF> {
    vec![ScalarUDF::from(Split::new())]
}

/// `split(text, delimiter) -> list of text`, zero-copy.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct Split {
    signature: Signature,
}

impl Split {
    fn new() -> Self {
        Self {
            signature: Signature::uniform(2, vec![DataType::Utf8View], Volatility::Immutable),
        }
    }
}

fn item_field() -> FieldRef {
    Arc::new(Field::new_list_field(DataType::Utf8View, true))
}

impl ScalarUDFImpl for Split {
    fn name(&self) -> &str {
        "split"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(item_field()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [text, delimiter] = args.args.as_slice() else {
            return exec_err!("split takes two arguments: split(text, delimiter)");
        };
        let text = text.to_array(args.number_rows)?;
        let text = text.as_string_view();
        let parts = match delimiter {
            ColumnarValue::Scalar(
                ScalarValue::Utf8View(Some(delimiter)) | ScalarValue::Utf8(Some(delimiter)),
            ) => split_views(text, |_| Some(delimiter.as_bytes())),
            ColumnarValue::Scalar(_) => split_views(text, |_| None),
            ColumnarValue::Array(delimiters) => {
                let delimiters = delimiters.as_string_view();
                split_views(text, |row| {
                    delimiters
                        .is_valid(row)
                        .then(|| delimiters.value(row).as_bytes())
                })
            }
        };
        Ok(ColumnarValue::Array(Arc::new(parts)))
    }
}

/// Splits each row of `text` at its delimiter (`None`: the row is NULL).
fn split_views<'a>(
    text: &'a StringViewArray,
    delimiter: impl Fn(usize) -> Option<&'a [u8]>,
) -> ListArray {
    let mut views: Vec<u128> = Vec::with_capacity(text.len() * 4);
    let mut offsets: Vec<i32> = Vec::with_capacity(text.len() + 1);
    offsets.push(0);
    let mut valid = Vec::with_capacity(text.len());
    for row in 0..text.len() {
        let delimiter = delimiter(row);
        let (Some(delimiter), true) = (delimiter, text.is_valid(row)) else {
            valid.push(false);
            offsets.push(views.len() as i32);
            continue;
        };
        valid.push(true);
        let bytes = text.value(row).as_bytes();
        // A long string lives in a data buffer; its parts point into it.
        let view = ByteView::from(text.views()[row]);
        let (block, base) = if bytes.len() > 12 {
            (view.buffer_index, view.offset)
        } else {
            (0, 0)
        };
        let mut push =
            |start: usize, end: usize| views.push(view_of(bytes, start, end, block, base));
        if bytes.is_empty() {
            // As PostgreSQL's string_to_array: '' has no parts.
        } else if delimiter.is_empty() {
            push(0, bytes.len());
        } else if let [byte] = delimiter {
            // Words are short: a plain loop beats a vectorised search that
            // restarts after every few bytes.
            let mut start = 0;
            for (at, b) in bytes.iter().enumerate() {
                if b == byte {
                    push(start, at);
                    start = at + 1;
                }
            }
            push(start, bytes.len());
        } else {
            let mut start = 0;
            for at in memchr::memmem::find_iter(bytes, delimiter) {
                push(start, at);
                start = at + delimiter.len();
            }
            push(start, bytes.len());
        }
        offsets.push(views.len() as i32);
    }
    // SAFETY: every view is a sub-range of a valid UTF-8 string of `text`
    // (inline in the view when at most 12 bytes, else in the same data
    // buffer at the same offset), cut at the edges of a whole UTF-8
    // delimiter, so each is valid UTF-8 and within its buffer.
    let values = unsafe {
        StringViewArray::new_unchecked(
            ScalarBuffer::from(views),
            text.data_buffers().to_vec(),
            None,
        )
    };
    let nulls = valid.iter().any(|v| !v).then(|| valid.into());
    ListArray::new(
        item_field(),
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        Arc::new(values) as ArrayRef,
        nulls,
    )
}

/// The view of `bytes[start..end]`, where `bytes` is stored at `base` in data
/// buffer `block` (when longer than 12 bytes): up to 12 bytes inline, else
/// length, 4-byte prefix, buffer index and offset (Arrow's view layout).
#[inline]
fn view_of(bytes: &[u8], start: usize, end: usize, block: u32, base: u32) -> u128 {
    let part = &bytes[start..end];
    let len = part.len() as u128;
    if part.len() <= 12 {
        let mut inline = [0u8; 16];
        inline[4..4 + part.len()].copy_from_slice(part);
        return u128::from_le_bytes(inline) | len;
    }
    let prefix = u32::from_le_bytes([part[0], part[1], part[2], part[3]]) as u128;
    len | prefix << 32 | (block as u128) << 64 | ((base + start as u32) as u128) << 96
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::compute::cast;

    fn parts(list: &ListArray) -> Vec<Option<Vec<String>>> {
        (0..list.len())
            .map(|row| {
                list.is_valid(row).then(|| {
                    let values = cast(&list.value(row), &DataType::Utf8).unwrap();
                    values
                        .as_string::<i32>()
                        .iter()
                        .map(|v| v.unwrap().to_string())
                        .collect()
                })
            })
            .collect()
    }

    fn owned(words: &[&str]) -> Option<Vec<String>> {
        Some(words.iter().map(|w| w.to_string()).collect())
    }

    #[test]
    fn splits_short_and_long_strings_without_copying_bytes() {
        let text = StringViewArray::from(vec![
            Some("a b"),
            Some("a considerably longer line of words"),
            None,
            Some(""),
            Some("double  space"),
            Some("ünïcödé wörds hére"),
        ]);
        let list = split_views(&text, |_| Some(b" "));
        assert_eq!(
            parts(&list),
            vec![
                owned(&["a", "b"]),
                owned(&["a", "considerably", "longer", "line", "of", "words"]),
                None,
                owned(&[]),
                owned(&["double", "", "space"]),
                owned(&["ünïcödé", "wörds", "hére"]),
            ]
        );
        let values = list.values().as_string_view();
        assert!(
            values
                .data_buffers()
                .iter()
                .zip(text.data_buffers())
                .all(|(a, b)| a.as_ptr() == b.as_ptr())
        );
    }

    #[test]
    fn views_match_arrows_layout() {
        use datafusion::arrow::array::builder::make_view;
        let text = b"xxhello, a rather long word";
        for (start, end) in [(2, 7), (2, 14), (2, 15), (0, text.len()), (5, 5)] {
            assert_eq!(
                view_of(text, start, end, 3, 100),
                make_view(&text[start..end], 3, 100 + start as u32)
            );
        }
    }

    #[test]
    fn multi_byte_and_empty_delimiters() {
        let text = StringViewArray::from(vec!["a--b--c", "abc"]);
        assert_eq!(
            parts(&split_views(&text, |_| Some(b"--"))),
            vec![owned(&["a", "b", "c"]), owned(&["abc"])]
        );
        assert_eq!(
            parts(&split_views(&text, |_| Some(b""))),
            vec![owned(&["a--b--c"]), owned(&["abc"])]
        );
    }

    #[test]
    fn matches_string_to_array_on_plain_text() {
        let lines = StringArray::from(vec!["Spark Streaming Sample ssc", "Spark Queue Spark API"]);
        let views = cast(&lines, &DataType::Utf8View).unwrap();
        let list = split_views(views.as_string_view(), |_| Some(b" "));
        assert_eq!(
            parts(&list),
            vec![
                owned(&["Spark", "Streaming", "Sample", "ssc"]),
                owned(&["Spark", "Queue", "Spark", "API"])
            ]
        );
    }
}
