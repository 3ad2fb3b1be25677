//! How the process keeps memory between batches. Each batch builds and
//! frees the same large buffers and hash tables; glibc's allocator returns
//! freed memory at the top of its heaps to the system (and maps buffers
//! over its threshold afresh each time), so the next batch faults the same
//! pages in again: minor page faults by the hundred thousand, and run times
//! that vary by a factor of two from run to run. [`keep_freed_memory`]
//! tells glibc to keep what it frees for the next batch instead. The
//! process then holds its peak (what its largest batch needed) rather than
//! shrinking between batches.

/// Bytes of free memory at the top of a heap glibc keeps before returning
/// any to the system: more than a batch's working set at the sizes brook
/// is measured at.
const TRIM_THRESHOLD: i32 = 1 << 30;

/// Allocations of this size or more are mapped on their own (and unmapped
/// when freed); glibc's largest setting, so that batches' buffers come
/// from the heap and stay there.
const MMAP_THRESHOLD: i32 = 32 << 20;

/// Keeps freed memory in the process for the next batch (glibc on Linux;
/// elsewhere nothing). The `brook` binary calls it at start; a program
/// using the library may.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before the
    // process allocates heavily, and glibc's allocator is thread-safe.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
