//! Listing the leaves of a table, and a readable dump of them.

use core::fmt;

use memory_addr::PhysAddr;

use crate::geometry::{Geometry, MAX_LEVELS};
use crate::table::{Kind, kind, read, table_ptr};
use crate::{GenericPTE, MappingFlags, PageSize, PageTable64, PagingHandler, PagingMetaData};

/// One leaf of a page table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mapping {
    /// The first address the leaf maps, in canonical form.
    pub vaddr: usize,
    /// The physical address it maps to.
    pub paddr: PhysAddr,
    /// Its size.
    pub size: PageSize,
    /// The permissions and memory type the hardware applies (empty for a reservation).
    pub flags: MappingFlags,
    /// Whether the hardware sees it as valid (false for a non-present reservation).
    pub present: bool,
}

/// An iterator over the leaves of a table in address order (see
/// [`PageTable64::mappings`]).
pub struct Mappings<'a, M: PagingMetaData, PTE: GenericPTE, H: PagingHandler> {
    _table: &'a PageTable64<M, PTE, H>,
    /// Per depth (0 = root): the table, the next index to read, the table's first address.
    stack: [(PhysAddr, usize, usize); MAX_LEVELS],
    depth: usize,
}

impl<M: PagingMetaData, PTE: GenericPTE, H: PagingHandler> Iterator for Mappings<'_, M, PTE, H> {
    type Item = Mapping;

    fn next(&mut self) -> Option<Mapping> {
        let geo = PageTable64::<M, PTE, H>::GEOMETRY;
        while self.depth > 0 {
            let height = geo.root_height() + 1 - self.depth;
            let (table, index, base) = self.stack[self.depth - 1];
            if index == geo.entries(height) {
                self.depth -= 1;
                continue;
            }
            self.stack[self.depth - 1].1 += 1;
            // SAFETY: `table` is a live table at `height`; `index` is within its entries.
            let pte = unsafe { read(table_ptr::<PTE, H>(table), index) };
            let va = base + (index << Geometry::shift(height));
            match kind(&pte, height, self._table.invalid) {
                Kind::Empty => {}
                Kind::Table(next) => {
                    self.stack[self.depth] = (next, 0, va);
                    self.depth += 1;
                }
                Kind::Leaf => {
                    let Some(size) = Geometry::page_size(height) else {
                        continue;
                    };
                    return Some(Mapping {
                        vaddr: M::canonicalize(va),
                        paddr: pte.paddr(),
                        size,
                        flags: pte.flags(),
                        present: pte.is_present(),
                    });
                }
            }
        }
        None
    }
}

impl<M: PagingMetaData, PTE: GenericPTE, H: PagingHandler> PageTable64<M, PTE, H> {
    /// Every leaf of the table (present or a reservation), in address order.
    pub fn mappings(&self) -> Mappings<'_, M, PTE, H> {
        let mut stack = [(PhysAddr::from_usize(0), 0, 0); MAX_LEVELS];
        stack[0] = (self.root_paddr(), 0, 0);
        Mappings {
            _table: self,
            stack,
            depth: 1,
        }
    }

    /// The present mappings that are both writable and executable (a W^X audit, as Linux's
    /// `ptdump_check_wx`), in address order.
    pub fn writable_and_executable(&self) -> impl Iterator<Item = Mapping> + '_ {
        self.mappings().filter(|m| {
            m.present
                && m.flags
                    .contains(MappingFlags::WRITE | MappingFlags::EXECUTE)
        })
    }

    /// The present mappings accessible at user privilege, in address order.
    pub fn user_accessible(&self) -> impl Iterator<Item = Mapping> + '_ {
        self.mappings()
            .filter(|m| m.present && m.flags.contains(MappingFlags::USER))
    }

    /// The present mappings that are both user-accessible and global, in address order.
    ///
    /// A global translation is not tagged with an address-space identifier, so a user
    /// mapping marked global stays visible in the TLB after a switch to another address
    /// space; this is rarely wanted outside a page every process shares (a vDSO).
    pub fn user_global(&self) -> impl Iterator<Item = Mapping> + '_ {
        self.mappings()
            .filter(|m| m.present && m.flags.contains(MappingFlags::USER | MappingFlags::GLOBAL))
    }

    /// A readable dump of the table: runs of leaves with the same size and flags that are
    /// contiguous in both address spaces are merged into one line.
    pub fn dump(&self) -> Dump<'_, M, PTE, H> {
        Dump { table: self }
    }
}

/// The [`Display`](fmt::Display) form of a table, from [`PageTable64::dump`].
///
/// One line per run: virtual range, physical start, page size and count, then
/// `r`/`w`/`x` permissions, `u` (user) or `k` (kernel only), `g` if global, and the memory
/// type (`normal`, `device`, `uncached`); reservations show `reserved`. For example
/// `r-x kg normal` is global kernel text.
pub struct Dump<'a, M: PagingMetaData, PTE: GenericPTE, H: PagingHandler> {
    table: &'a PageTable64<M, PTE, H>,
}

struct Run {
    start: Mapping,
    end: usize,
    count: usize,
}

impl Run {
    fn extends(&self, m: &Mapping) -> bool {
        let len = self.end.wrapping_sub(self.start.vaddr);
        m.vaddr == self.end
            && m.paddr.as_usize() == self.start.paddr.as_usize().wrapping_add(len)
            && m.size == self.start.size
            && m.flags == self.start.flags
            && m.present == self.start.present
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.start;
        let size = match m.size {
            PageSize::Size4K => "4K",
            PageSize::Size1M => "1M",
            PageSize::Size2M => "2M",
            PageSize::Size1G => "1G",
        };
        write!(
            f,
            "{:#018x}-{:#018x} -> {:#014x}  {:>2} x{:<6} ",
            m.vaddr,
            self.end,
            m.paddr.as_usize(),
            size,
            self.count
        )?;
        if !m.present {
            return f.write_str("reserved");
        }
        let bit = |flag, c| if m.flags.contains(flag) { c } else { '-' };
        let mem = if m.flags.contains(MappingFlags::DEVICE) {
            "device"
        } else if m.flags.contains(MappingFlags::UNCACHED) {
            "uncached"
        } else {
            "normal"
        };
        write!(
            f,
            "{}{}{} {}{} {}",
            bit(MappingFlags::READ, 'r'),
            bit(MappingFlags::WRITE, 'w'),
            bit(MappingFlags::EXECUTE, 'x'),
            if m.flags.contains(MappingFlags::USER) {
                'u'
            } else {
                'k'
            },
            bit(MappingFlags::GLOBAL, 'g'),
            mem
        )
    }
}

impl<M: PagingMetaData, PTE: GenericPTE, H: PagingHandler> fmt::Display for Dump<'_, M, PTE, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut run: Option<Run> = None;
        for m in self.table.mappings() {
            match &mut run {
                Some(r) if r.extends(&m) => {
                    r.end = r.end.wrapping_add(m.size as usize);
                    r.count += 1;
                }
                _ => {
                    if let Some(r) = run.take() {
                        writeln!(f, "{r}")?;
                    }
                    let end = m.vaddr.wrapping_add(m.size as usize);
                    run = Some(Run {
                        start: m,
                        end,
                        count: 1,
                    });
                }
            }
        }
        if let Some(r) = run {
            writeln!(f, "{r}")?;
        }
        Ok(())
    }
}
