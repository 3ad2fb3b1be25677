//! Reading a script file (`brook run FILE`, `-f FILE`, `\i FILE`) with a
//! bound, so that a wrong path (`/dev/zero`, a huge log) fails at once
//! instead of filling memory.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// The largest script brook reads: 16 MiB, far more SQL than a script
/// holds, small enough to read and tokenize at once.
pub const MAX_SCRIPT_BYTES: u64 = 16 << 20;

/// Reads the script at `path`: a regular file of at most
/// [`MAX_SCRIPT_BYTES`] of UTF-8. The error names the file and says why.
pub(crate) fn read_script(path: &Path) -> Result<String, String> {
    let cannot = |why: String| format!("cannot read {}: {why}", path.display());
    let metadata = std::fs::metadata(path).map_err(|err| cannot(err.to_string()))?;
    if !metadata.is_file() {
        return Err(cannot(
            "not a regular file (scripts are read from files only)".to_string(),
        ));
    }
    let too_large = || {
        cannot(format!(
            "larger than {} MiB, the most a script may hold",
            MAX_SCRIPT_BYTES >> 20
        ))
    };
    if metadata.len() > MAX_SCRIPT_BYTES {
        return Err(too_large());
    }
    let file = File::open(path).map_err(|err| cannot(err.to_string()))?;
    let mut bytes = Vec::new();
    // The file may grow after the size was checked: read one byte past
    // the bound to notice.
    file.take(MAX_SCRIPT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| cannot(err.to_string()))?;
    if bytes.len() as u64 > MAX_SCRIPT_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|err| {
        cannot(format!(
            "not valid UTF-8 (at byte {})",
            err.utf8_error().valid_up_to()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_directories_are_refused() {
        let err = read_script(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(
            err,
            "cannot read /dev/zero: not a regular file (scripts are read from files only)"
        );
        assert!(read_script(Path::new("/")).is_err());
    }
}
