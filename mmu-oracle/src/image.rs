//! The guest's physical memory as seen by the host while tables are built.

use std::cell::RefCell;
use std::marker::PhantomData;

use memory_addr::{PhysAddr, VirtAddr};
use page_table_multiarch::PagingHandler;

use crate::Arch;
use crate::layout::{self, DATA, Layout, POOL, WINDOW};

const FRAME: u64 = 0x1000;
const POOL_FRAMES: usize = ((DATA - POOL) / FRAME) as usize;

/// The window buffer and the allocators of the image being built on this thread.
struct Mem {
    arch: Arch,
    layout: Layout,
    /// `WINDOW / 8` words from `Box::into_raw`; freed in `Drop`.
    words: *mut u64,
    /// Pool frames in use.
    pool_used: Vec<bool>,
    /// Next free byte of the data region (window offset).
    data_next: u64,
    /// Frames the handler currently has out (for leak checks).
    tables_live: usize,
    /// Allocations that may still succeed before every further one fails (`None`: no
    /// limit).
    fail_after: Option<usize>,
}

impl Mem {
    const WORDS: usize = (WINDOW / 8) as usize;

    fn new(arch: Arch) -> Self {
        let layout = Layout::of(arch);
        let mut buf = vec![0u64; Self::WORDS].into_boxed_slice();
        // Everything the tables do not own holds tags: the pool (so a table frame the
        // library forgot to zero shows up as junk entries) and the data frames.
        for (i, w) in buf.iter_mut().enumerate() {
            let off = i as u64 * 8;
            if (POOL..layout::RESULTS).contains(&off) {
                *w = layout::tag(arch, layout.img_base + off);
            }
        }
        Self {
            arch,
            layout,
            words: Box::into_raw(buf).cast::<u64>(),
            pool_used: vec![false; POOL_FRAMES],
            data_next: DATA,
            tables_live: 0,
            fail_after: None,
        }
    }

    fn index(&self, pa: u64) -> usize {
        assert!(
            pa >= self.layout.img_base && pa + 8 <= self.layout.img_base + WINDOW && pa % 8 == 0,
            "physical address {pa:#x} is not an aligned word of the image window"
        );
        ((pa - self.layout.img_base) / 8) as usize
    }

    fn read(&self, pa: u64) -> u64 {
        let i = self.index(pa);
        // SAFETY: `index` checked that `i < WORDS`, and `words` points to `WORDS` words that
        // live as long as `self`.
        unsafe { self.words.add(i).read() }
    }

    fn write(&mut self, pa: u64, value: u64) {
        let i = self.index(pa);
        // SAFETY: as in `read`.
        unsafe { self.words.add(i).write(value) }
    }

    fn fill_frames(&mut self, pa: u64, frames: usize, junk: bool) {
        for off in (0..frames as u64 * FRAME).step_by(8) {
            let v = if junk {
                layout::tag(self.arch, pa + off)
            } else {
                0
            };
            self.write(pa + off, v);
        }
    }

    fn alloc_pool(&mut self, num: usize, align: u64) -> Option<u64> {
        if num == 0 || !align.is_power_of_two() || align < FRAME || self.fail_after == Some(0) {
            return None;
        }
        let base = self.layout.pa(POOL);
        let mut start = 0;
        while start + num <= POOL_FRAMES {
            let pa = base + start as u64 * FRAME;
            if pa % align != 0 {
                start += 1;
                continue;
            }
            match self.pool_used[start..start + num].iter().position(|&u| u) {
                Some(used) => start += used + 1,
                None => {
                    self.pool_used[start..start + num].fill(true);
                    self.tables_live += num;
                    if let Some(n) = &mut self.fail_after {
                        *n -= 1;
                    }
                    return Some(pa);
                }
            }
        }
        None
    }

    fn dealloc_pool(&mut self, pa: u64, num: usize) {
        let base = self.layout.pa(POOL);
        assert!(
            pa >= base && pa % FRAME == 0,
            "freed frame {pa:#x} is not from the pool"
        );
        let start = ((pa - base) / FRAME) as usize;
        assert!(
            start + num <= POOL_FRAMES,
            "freed frames {pa:#x}+{num} out of the pool"
        );
        for used in &mut self.pool_used[start..start + num] {
            assert!(*used, "double free of pool frame at {pa:#x}");
            *used = false;
        }
        self.tables_live -= num;
        self.fill_frames(pa, num, true);
    }
}

impl Drop for Mem {
    fn drop(&mut self) {
        let slice = std::ptr::slice_from_raw_parts_mut(self.words, Self::WORDS);
        // SAFETY: `words` came from `Box::into_raw` of a boxed slice of `WORDS` words and
        // is freed only here.
        drop(unsafe { Box::from_raw(slice) });
    }
}

thread_local! {
    static MEM: RefCell<Option<Mem>> = const { RefCell::new(None) };
}

fn with_mem<R>(f: impl FnOnce(&mut Mem) -> R) -> R {
    MEM.with(|m| {
        let mut m = m.borrow_mut();
        let mem = m
            .as_mut()
            .expect("no mmu_oracle::Image is alive on this thread");
        f(mem)
    })
}

/// The guest-physical image under construction: the image window of one architecture
/// (mailbox, probe list, page-table frame pool, tagged data frames, result records).
///
/// One `Image` at a time may be alive per thread: [`OracleHandler`], the
/// [`PagingHandler`] given to the library, allocates from the current thread's image.
/// Dropping the image frees the window; a page table that outlives it must not be used
/// again (its frees are then ignored).
#[derive(Debug)]
pub struct Image {
    arch: Arch,
    layout: Layout,
    /// Whether dropping this handle frees the image (false for [`with_current`]'s view).
    owner: bool,
    _not_send: PhantomData<*const ()>,
}

impl Image {
    /// Creates the image of `arch` for this thread.
    ///
    /// # Panics
    ///
    /// If another `Image` is alive on this thread.
    pub fn new(arch: Arch) -> Self {
        MEM.with(|m| {
            let mut m = m.borrow_mut();
            assert!(
                m.is_none(),
                "an mmu_oracle::Image is already alive on this thread"
            );
            *m = Some(Mem::new(arch));
        });
        Self {
            arch,
            layout: Layout::of(arch),
            owner: true,
            _not_send: PhantomData,
        }
    }

    /// The architecture of this image.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The physical memory map.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Reads the 8-byte word at `pa` (inside the image window).
    pub fn read_u64(&self, pa: u64) -> u64 {
        with_mem(|m| m.read(pa))
    }

    /// Writes the 8-byte word at `pa` (inside the image window).
    pub fn write_u64(&self, pa: u64, value: u64) {
        with_mem(|m| m.write(pa, value))
    }

    /// Allocates a zeroed 4 KiB table frame from the pool (for tables written by hand).
    pub fn alloc_table(&self) -> u64 {
        with_mem(|m| {
            let pa = m.alloc_pool(1, FRAME).expect("page-table pool exhausted");
            m.fill_frames(pa, 1, false);
            pa
        })
    }

    /// Allocates `size` bytes of tagged data frames aligned to `align` (both powers of two,
    /// at least 4 KiB). Data frames are never reused.
    ///
    /// # Panics
    ///
    /// If the data region (12 MiB) is exhausted.
    pub fn alloc_data(&self, size: u64, align: u64) -> u64 {
        assert!(align.is_power_of_two() && align >= FRAME && size % FRAME == 0 && size > 0);
        with_mem(|m| {
            let base = m.layout.img_base;
            let start = (base + m.data_next).next_multiple_of(align) - base;
            assert!(
                start + size <= layout::RESULTS,
                "data region exhausted ({size:#x} bytes aligned to {align:#x} requested)"
            );
            m.data_next = start + size;
            base + start
        })
    }

    /// A 1 GiB-aligned physical address for 1 GiB pages: the first and last MiB of that
    /// GiB are tagged (see [`Layout::huge_1g`]).
    pub fn huge_1g_frame(&self) -> u64 {
        self.layout.huge_1g
    }

    /// Makes [`OracleHandler`]'s allocations fail once `n` more have succeeded (`Some(0)`:
    /// from the next one on), until called again; `None` lifts the limit. For the
    /// library's error paths: an operation that runs out of frames half way.
    pub fn fail_allocations_after(&self, n: Option<usize>) {
        with_mem(|m| m.fail_after = n)
    }

    /// Number of pool frames the library currently holds.
    pub fn tables_live(&self) -> usize {
        with_mem(|m| m.tables_live)
    }

    /// A copy of the whole window (for the runner).
    pub(crate) fn window_bytes(&self) -> Vec<u8> {
        with_mem(|m| {
            // SAFETY: `words` points to `WORDS` initialised words (`WINDOW` bytes) that live
            // as long as `m`; nothing writes them while this shared view exists.
            let bytes =
                unsafe { std::slice::from_raw_parts(m.words.cast::<u8>(), WINDOW as usize) };
            // The guests are little-endian, as is every host this crate supports.
            const { assert!(cfg!(target_endian = "little")) };
            bytes.to_vec()
        })
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if self.owner {
            MEM.with(|m| m.borrow_mut().take());
        }
    }
}

/// Calls `f` with a view of this thread's image.
///
/// # Panics
///
/// If no [`Image`] is alive on this thread.
pub(crate) fn with_current<R>(f: impl FnOnce(&Image) -> R) -> R {
    let arch = with_mem(|m| m.arch);
    let view = Image {
        arch,
        layout: Layout::of(arch),
        owner: false,
        _not_send: PhantomData,
    };
    f(&view)
}

/// The [`PagingHandler`] of the thread's [`Image`]: table frames come from the image's
/// pool, and `phys_to_virt` points into the host copy of the window.
#[derive(Debug)]
pub struct OracleHandler;

impl PagingHandler for OracleHandler {
    fn alloc_frames(num: usize, align: usize) -> Option<PhysAddr> {
        with_mem(|m| m.alloc_pool(num, align as u64)).map(|pa| PhysAddr::from(pa as usize))
    }

    fn dealloc_frames(paddr: PhysAddr, num: usize) {
        MEM.with(|m| {
            if let Some(m) = m.borrow_mut().as_mut() {
                m.dealloc_pool(paddr.as_usize() as u64, num);
            }
        });
    }

    fn phys_to_virt(paddr: PhysAddr) -> VirtAddr {
        with_mem(|m| {
            let pa = paddr.as_usize() as u64;
            let i = m.index(pa & !7);
            // SAFETY: `index` checked that the word is inside the window.
            let p = unsafe { m.words.add(i) };
            VirtAddr::from(p as usize + (pa & 7) as usize)
        })
    }
}
