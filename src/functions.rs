//! SQL functions brook adds to DataFusion.
//!
//! `split(text, delimiter)`: the parts of `text` between occurrences of
//! `delimiter`, as a list. Like `string_to_array(text, delimiter)`, but the
//! parts are views into `text`'s own buffers, so splitting copies no string
//! bytes. `unnest(split(line, ' '))` is brook's fast word split: it runs as
//! one operator (`crate::exec::split_unnest`), which shares the splitting
//! itself, [`push_parts`].

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
    pub(crate) fn new() -> Self {
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
        push_parts(text, row, delimiter, &mut views);
        offsets.push(views.len() as i32);
    }
    // SAFETY: `push_parts` makes views of whole UTF-8 parts of `text`'s
    // strings, inline or into `text`'s data buffers (see there).
    let values = unsafe { parts_array(views, text, None) };
    let nulls = valid.iter().any(|v| !v).then(|| valid.into());
    ListArray::new(
        item_field(),
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        Arc::new(values) as ArrayRef,
        nulls,
    )
}

/// The string array of `views` made by [`push_parts`] over `text`, sharing
/// `text`'s data buffers.
///
/// # Safety
/// Every view must come from [`push_parts`] over this `text` (or be a null
/// slot's zero view, with `nulls` marking it).
pub(crate) unsafe fn parts_array(
    views: Vec<u128>,
    text: &StringViewArray,
    nulls: Option<datafusion::arrow::buffer::NullBuffer>,
) -> StringViewArray {
    // SAFETY: per this function's contract.
    unsafe {
        StringViewArray::new_unchecked(
            ScalarBuffer::from(views),
            text.data_buffers().to_vec(),
            nulls,
        )
    }
}

/// Appends to `views` one view per part of `text`'s (non-null) string at
/// `row`, split at `delimiter`. As PostgreSQL's `string_to_array`: an empty
/// string has no parts; an empty delimiter makes the whole string one part.
///
/// Each view is a sub-range of a valid UTF-8 string of `text` (inline in
/// the view when at most 12 bytes, else in the same data buffer at the same
/// offset), cut at the edges of a whole UTF-8 delimiter, so each is valid
/// UTF-8 and within its buffer.
#[inline]
pub(crate) fn push_parts(
    text: &StringViewArray,
    row: usize,
    delimiter: &[u8],
    views: &mut Vec<u128>,
) {
    let bytes = text.value(row).as_bytes();
    // A long string lives in a data buffer; its long parts point into it.
    let (block, base) = if bytes.len() > 12 {
        let view = ByteView::from(text.views()[row]);
        (view.buffer_index, view.offset)
    } else {
        (0, 0)
    };
    match delimiter {
        _ if bytes.is_empty() => {}
        [] => views.push(view_of(bytes, 0, bytes.len(), block, base)),
        [byte] => push_byte_parts(bytes, *byte, block, base, views),
        _ => {
            let mut start = 0;
            for at in memchr::memmem::find_iter(bytes, delimiter) {
                views.push(view_of(bytes, start, at, block, base));
                start = at + delimiter.len();
            }
            views.push(view_of(bytes, start, bytes.len(), block, base));
        }
    }
}

/// [`push_parts`] for a one-byte delimiter, eight bytes at a time. Words are
/// short, so this beats a vectorised search that restarts after every few
/// bytes; the bit trick finds every delimiter byte of a chunk at once.
#[inline]
fn push_byte_parts(bytes: &[u8], byte: u8, block: u32, base: u32, views: &mut Vec<u128>) {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let pattern = u64::from_ne_bytes([byte; 8]);
    let (chunks, rest) = bytes.as_chunks::<8>();
    // The last bytes, padded with a byte that is not the delimiter.
    let mut tail = [!byte; 8];
    for (slot, b) in tail.iter_mut().zip(rest) {
        *slot = *b;
    }
    views.reserve(bytes.len() / 2 + 1);
    let mut start = 0;
    for (index, chunk) in chunks.iter().chain(std::iter::once(&tail)).enumerate() {
        let zeroed = u64::from_le_bytes(*chunk) ^ pattern;
        // The high bit of each byte that was `byte` (now zero), exactly:
        // no carry crosses a byte, so there are no false hits.
        let mut hits = !(((zeroed & LOW7) + LOW7) | zeroed | LOW7);
        while hits != 0 {
            let at = index * 8 + (hits.trailing_zeros() / 8) as usize;
            views.push(view_of(bytes, start, at, block, base));
            start = at + 1;
            hits &= hits - 1;
        }
    }
    views.push(view_of(bytes, start, bytes.len(), block, base));
}

/// The view of `bytes[start..end]`, where `bytes` is stored at `base` in data
/// buffer `block` (when longer than 12 bytes): up to 12 bytes inline, else
/// length, 4-byte prefix, buffer index and offset (Arrow's view layout).
#[inline(always)]
fn view_of(bytes: &[u8], start: usize, end: usize, block: u32, base: u32) -> u128 {
    let len = end - start;
    if len <= 12 {
        // Fixed-size loads of 12 bytes around the part, then shifts and a
        // mask: no variable-length copy per word.
        let payload = if let Some(window) = bytes.get(start..start + 12) {
            load_12(window) & INLINE_MASKS[len]
        } else if let Some(window) = end.checked_sub(12).and_then(|from| bytes.get(from..end)) {
            load_12(window) >> (8 * (12 - len))
        } else {
            // The whole string is shorter than 12 bytes.
            let mut inline = [0u8; 16];
            inline[..len].copy_from_slice(&bytes[start..end]);
            u128::from_le_bytes(inline)
        };
        return payload << 32 | len as u128;
    }
    let prefix = u32::from_le_bytes([
        bytes[start],
        bytes[start + 1],
        bytes[start + 2],
        bytes[start + 3],
    ]) as u128;
    len as u128 | prefix << 32 | (block as u128) << 64 | ((base + start as u32) as u128) << 96
}

/// For each length up to 12, the mask of that many low bytes.
const INLINE_MASKS: [u128; 13] = {
    let mut masks = [0u128; 13];
    let mut len = 1;
    while len <= 12 {
        masks[len] = (1u128 << (8 * len)) - 1;
        len += 1;
    }
    masks
};

/// For each length up to 12, the mask of an inline view of a string of
/// that length: the length field and the string's bytes, not what follows.
pub(crate) const INLINE_VIEW_MASKS: [u128; 13] = {
    let mut masks = [u128::MAX; 13];
    let mut len = 0;
    while len < 12 {
        masks[len] = (1u128 << (32 + 8 * len)) - 1;
        len += 1;
    }
    masks
};

/// 12 bytes as the low 96 bits of a little-endian integer.
#[inline(always)]
fn load_12(window: &[u8]) -> u128 {
    let mut word = [0u8; 16];
    word[..12].copy_from_slice(&window[..12]);
    u128::from_le_bytes(word)
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
        // Parts with and without 12 readable bytes after their start.
        let len = text.len();
        for (start, end) in [
            (2, 7),
            (2, 14),
            (2, 15),
            (0, len),
            (5, 5),
            (len - 3, len),
            (len - 12, len),
            (len - 13, len - 1),
            (len, len),
        ] {
            assert_eq!(
                view_of(text, start, end, 3, 100),
                make_view(&text[start..end], 3, 100 + start as u32)
            );
        }
        // A string shorter than 12 bytes: every part of it.
        let short = b"ab cde f";
        for start in 0..=short.len() {
            for end in start..=short.len() {
                assert_eq!(
                    view_of(short, start, end, 0, 0),
                    make_view(&short[start..end], 0, 0)
                );
            }
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

    #[test]
    fn the_word_at_a_time_scan_finds_every_delimiter_and_no_other_byte() {
        // Delimiters at every position of an 8-byte chunk, runs of them,
        // and bytes that differ from ' ' only in the high bit (0xA0).
        let mut rng = crate::testing::Rng::new(0x2545_f491_4f6c_dd1d);
        let alphabet = ["a", " ", "  ", "\u{a0}", "é", "bcdefgh", "x"];
        let lines: Vec<String> = (0..40)
            .flat_map(|length| std::iter::repeat_n(length, 50))
            .map(|length| {
                (0..length)
                    .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                    .collect()
            })
            .collect();
        let text = StringViewArray::from_iter_values(&lines);
        for (row, line) in lines.iter().enumerate() {
            let mut views = Vec::new();
            push_parts(&text, row, b" ", &mut views);
            // SAFETY: views made by push_parts over `text`.
            let parts = unsafe { parts_array(views, &text, None) };
            let found: Vec<&str> = parts.iter().map(|p| p.unwrap_or("NULL")).collect();
            let expected: Vec<&str> = if line.is_empty() {
                Vec::new()
            } else {
                line.split(' ').collect()
            };
            assert_eq!(found, expected, "splitting {line:?}");
        }
    }
}
