//! A capture file read through a memory map, so that records and segment payloads are slices of the
//! file's pages instead of copies (the read(2) copy and the reassembly copy were a third of
//! `analyze`'s time on large captures).
//!
//! Two hazards a map brings, and how they are met:
//! * **A file that shrinks while it is read** (truncated or rewritten under us) turns an access to
//!   the vanished pages into SIGBUS. A process-wide SIGBUS handler recognizes addresses inside a
//!   registered map, maps a zero page over the faulting page and marks the map as shrunk; the
//!   reader then reports an I/O error at the record that was cut ("the file shrank while it was
//!   being read") instead of the process dying. (The kernel gives no fault for the rest of the
//!   new last page: those bytes read as zeros.) A SIGBUS anywhere else keeps the action it had.
//! * **Resident memory**: every page touched stays mapped, so reading a 1 GB file would show 1 GB
//!   of RSS (file-backed, reclaimable, but counted). The reader drops pages it left well behind
//!   ([`Mapped::release_before`]); a slice still held is read back from the page cache if touched.
//!
//! Only regular files are mapped; pipes, `-` and anything that cannot be mapped are read as before.
//! A file that grows while it is read is read by `read(2)` beyond the length it had when mapped.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};

use bytes::Bytes;

/// Most maps registered with the SIGBUS handler at once (one per file being read); a file opened
/// when all are taken is read without a map.
const SLOTS: usize = 64;

/// The registered maps: start address (0 = free), length, shrunk flag. Plain atomics, so the
/// signal handler can read them without locks.
static STARTS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static LENS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static SHRUNK: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];
static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// The SIGBUS action before ours (Rust's runtime installs one): restored for faults not in a map.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// Smallest file mapped (bytes): every non-empty regular file is, so that small captures take the
/// same path as large ones (the map costs a few microseconds).
pub const MIN_MAP_LEN: u64 = 1;

/// The owner of one map: unregisters it when the last slice of it is dropped.
struct Owner {
    map: memmap2::Mmap,
    slot: usize,
}

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // The map is unmapped after this (field drop order): a fault in it cannot happen any more.
        STARTS[self.slot].store(0, Ordering::SeqCst);
        SHRUNK[self.slot].store(false, Ordering::SeqCst);
    }
}

/// A mapped capture file.
pub struct Mapped {
    /// The whole map; records and payloads are `slice_ref`s of it.
    pub bytes: Bytes,
    slot: usize,
    /// Pages below this offset were already released.
    released: usize,
}

impl Mapped {
    /// Maps `file` when it is a regular file of at least [`MIN_MAP_LEN`] bytes and a slot is free;
    /// `None` means "read it instead" (never an error: mapping is only a faster way to read).
    pub fn open(file: &File) -> Option<Mapped> {
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.len() < MIN_MAP_LEN {
            return None;
        }
        let len = usize::try_from(meta.len()).ok()?;
        install_handler();
        if !INSTALLED.load(Ordering::SeqCst) {
            return None;
        }
        let slot = (0..SLOTS).find(|&i| {
            STARTS[i]
                .compare_exchange(0, usize::MAX, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        })?;
        // SAFETY: the map is read-only. Its bytes change under us only if another process rewrites
        // or shrinks the file while it is read: a rewrite shows its new bytes (as a later read
        // would), and shrinking is turned from SIGBUS into zero pages plus the shrunk flag (above).
        // Captures are not rewritten in place by the tools that write them; they grow or are
        // replaced (a new file, which the map does not see).
        let map = match unsafe { memmap2::MmapOptions::new().len(len).map(file) } {
            Ok(m) => m,
            Err(_) => {
                STARTS[slot].store(0, Ordering::SeqCst);
                return None;
            }
        };
        let _ = map.advise(memmap2::Advice::Sequential);
        LENS[slot].store(map.len(), Ordering::SeqCst);
        SHRUNK[slot].store(false, Ordering::SeqCst);
        STARTS[slot].store(map.as_ptr() as usize, Ordering::SeqCst);
        Some(Mapped {
            bytes: Bytes::from_owner(Owner { map, slot }),
            slot,
            released: 0,
        })
    }

    /// Whether an access found the file shorter than the map (the bytes read there were zeros).
    pub fn shrunk(&self) -> bool {
        SHRUNK[self.slot].load(Ordering::Relaxed)
    }

    /// Offset below which pages were released.
    pub fn released(&self) -> usize {
        self.released
    }

    /// Drops the pages below `offset` from this process's memory (whole pages only). Slices of
    /// them stay valid: the kernel reads them back from the page cache when they are touched.
    pub fn release_before(&mut self, offset: usize) {
        let page = page_size();
        let end = (offset.min(self.bytes.len()) / page) * page;
        if end <= self.released {
            return;
        }
        let start = self.released;
        // SAFETY: the range lies inside the map (page aligned, below its length); MADV_DONTNEED on
        // a read-only file map only drops page-table entries: the contents are unchanged.
        unsafe {
            libc::madvise(
                self.bytes.as_ptr().add(start) as *mut libc::c_void,
                end - start,
                libc::MADV_DONTNEED,
            );
        }
        self.released = end;
    }
}

/// Maps `file` (see [`Mapped::open`]) and positions it at the map's end, where reading goes on
/// if the file grew; `None` (file position unchanged) means "read it as usual".
pub fn map_file(file: &mut File) -> Option<Mapped> {
    use std::io::{Seek, SeekFrom};
    let m = Mapped::open(file)?;
    let len = m.bytes.len() as u64;
    match file.seek(SeekFrom::Start(len)) {
        Ok(at) if at == len => Some(m),
        _ => {
            let _ = file.rewind();
            None
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

static PAGE: AtomicUsize = AtomicUsize::new(4096);

fn install_handler() {
    INSTALL.call_once(|| {
        PAGE.store(page_size(), Ordering::SeqCst);
        // SAFETY: a plain sigaction call; the handler only touches atomics and async-signal-safe
        // system calls (mmap, sigaction).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigbus as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &sa, &mut old) == 0 {
                let _ = PREVIOUS.set(old);
                INSTALLED.store(true, Ordering::SeqCst);
            }
        }
    });
}

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::Relaxed);
    for i in 0..SLOTS {
        let start = STARTS[i].load(Ordering::SeqCst);
        let len = LENS[i].load(Ordering::SeqCst);
        if start == 0 || start == usize::MAX || addr < start || addr - start >= len {
            continue;
        }
        let at = addr & !(page - 1);
        // SAFETY: `at` is a page of our own map; MAP_FIXED replaces just that page with zeros, so
        // the faulting read is retried and succeeds.
        let got = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if got != libc::MAP_FAILED {
            SHRUNK[i].store(true, Ordering::SeqCst);
            return;
        }
        break;
    }
    // Not ours (or the zero page could not be mapped): the action before ours takes the retried
    // access (the default action when there was none).
    // SAFETY: sigaction and signal are async-signal-safe; PREVIOUS was set before ours was installed.
    unsafe {
        match PREVIOUS.get() {
            Some(old) => {
                libc::sigaction(libc::SIGBUS, old, std::ptr::null_mut());
            }
            None => {
                libc::signal(libc::SIGBUS, libc::SIG_DFL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::reader::file::{Packet, Record, RecordReader};
    use std::io::Write;

    #[test]
    fn a_file_that_shrinks_reads_as_zeros_and_says_so() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let data = vec![0xABu8; 1 << 20];
        f.write_all(&data).unwrap();
        f.flush().unwrap();
        let file = File::open(f.path()).unwrap();
        let m = Mapped::open(&file).expect("a regular file this large is mapped");
        assert_eq!(m.bytes[10], 0xAB);
        assert!(!m.shrunk());
        f.as_file().set_len(4096).unwrap();
        // Beyond the new end: SIGBUS without the handler.
        let tail = m.bytes[m.bytes.len() - 1];
        assert_eq!(tail, 0);
        assert!(m.shrunk());
        assert_eq!(m.bytes[100], 0xAB, "bytes still in the file are intact");
    }

    /// A little-endian microsecond pcap of `n` Ethernet records of 1,000 bytes each.
    fn pcap(n: usize, header: bool) -> Vec<u8> {
        let mut v = Vec::new();
        if header {
            v.extend([0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]);
            v.extend([0u8; 8]);
            v.extend(65535u32.to_le_bytes());
            v.extend(1u32.to_le_bytes());
        }
        for i in 0..n {
            v.extend((i as u32).to_le_bytes());
            v.extend(0u32.to_le_bytes());
            v.extend(1000u32.to_le_bytes());
            v.extend(1000u32.to_le_bytes());
            v.extend(std::iter::repeat_n(i as u8, 1000));
        }
        v
    }

    fn count(r: &mut RecordReader<File>) -> (u64, Option<String>) {
        let mut n = 0;
        loop {
            match r.next_record() {
                Ok(Some(Record::Packet(p))) => {
                    assert_eq!(p.data.first(), p.data.last());
                    n += 1;
                }
                Ok(Some(_)) => {}
                Ok(None) => return (n, None),
                Err(e) => return (n, Some(e.to_string())),
            }
        }
    }

    #[test]
    fn a_capture_that_grows_while_read_is_read_to_its_new_end() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&pcap(300, true)).unwrap();
        f.flush().unwrap();
        let mut file = File::open(f.path()).unwrap();
        let map = map_file(&mut file);
        assert!(map.is_some());
        let mut r = RecordReader::with_map(file, map).unwrap();
        let first = r.next_record().unwrap();
        assert!(matches!(
            first,
            Some(Record::Packet(Packet {
                backing: Some(_),
                ..
            }))
        ));
        // Written after the map was made: read by read(2) past the map's end.
        f.write_all(&pcap(200, false)).unwrap();
        f.flush().unwrap();
        assert_eq!(count(&mut r), (499, None));
    }

    #[test]
    fn a_capture_truncated_while_read_ends_in_an_error_not_a_crash() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&pcap(3000, true)).unwrap();
        f.flush().unwrap();
        let mut file = File::open(f.path()).unwrap();
        let map = map_file(&mut file);
        let mut r = RecordReader::with_map(file, map).unwrap();
        assert!(r.next_record().unwrap().is_some());
        // At a page boundary: the rest of a partial last page would read as zeros without a fault
        // (the map cannot tell those zeros from data), whole pages beyond the end fault.
        f.as_file().set_len(244 * 4096).unwrap();
        let (n, err) = count(&mut r);
        let err = err.expect("the shrinking is reported");
        assert!(err.contains("shrank"), "{err}");
        assert!(n < 2999, "{n} records read past the new end");
    }

    #[test]
    fn empty_files_and_devices_are_not_mapped() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(Mapped::open(&File::open(f.path()).unwrap()).is_none());
        assert!(Mapped::open(&File::open("/dev/null").unwrap()).is_none());
    }

    #[test]
    fn released_pages_read_back_the_same() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..(1usize << 20) + 8192).map(|i| i as u8).collect();
        f.write_all(&data).unwrap();
        let mut m = Mapped::open(&File::open(f.path()).unwrap()).unwrap();
        let slice = m.bytes.slice(5000..9000);
        let sum: u64 = m.bytes.iter().map(|&b| u64::from(b)).sum();
        m.release_before(m.bytes.len());
        assert_eq!(&slice[..], &data[5000..9000]);
        assert_eq!(m.bytes.iter().map(|&b| u64::from(b)).sum::<u64>(), sum);
    }
}
