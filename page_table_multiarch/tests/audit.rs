//! The audit helpers and the dump: W^X violations and user-accessible mappings are listed
//! exactly, and the dump merges runs and shows effective permissions and memory types.

use memory_addr::{PhysAddr, VirtAddr};
use page_table_multiarch::{MappingFlags as F, PageSize, x86_64::X64PageTable};
use testkit::alloc::{self, SimHandler};
use testkit::mem;

#[test]
fn audit_lists_wx_and_user_mappings() {
    mem::reset();
    alloc::reset();
    let mut t = X64PageTable::<SimHandler>::try_new().unwrap();
    let mut c = t.cursor();
    let k = 0xffff_ffff_8000_0000usize;
    c.map_region(
        VirtAddr::from(k),
        |v| PhysAddr::from(v.as_usize() - k),
        0x20_0000,
        F::READ | F::EXECUTE | F::GLOBAL,
        true,
    )
    .unwrap();
    // A writable and executable page: the audit must report it.
    c.map(
        VirtAddr::from(k + 0x40_0000),
        PhysAddr::from(0x40_0000),
        PageSize::Size4K,
        F::READ | F::WRITE | F::EXECUTE,
    )
    .unwrap();
    c.map(
        VirtAddr::from(0x1000),
        PhysAddr::from(0x9000),
        PageSize::Size4K,
        F::READ | F::WRITE | F::USER,
    )
    .unwrap();
    // A reservation is neither.
    c.map(
        VirtAddr::from(0x2000),
        PhysAddr::from(0),
        PageSize::Size4K,
        F::empty(),
    )
    .unwrap();
    // A global user page (one every address space shares).
    c.map(
        VirtAddr::from(0x3000),
        PhysAddr::from(0xa000),
        PageSize::Size4K,
        F::READ | F::USER | F::GLOBAL,
    )
    .unwrap();
    drop(c);
    let wx: Vec<_> = t.writable_and_executable().map(|m| m.vaddr).collect();
    assert_eq!(wx, [k + 0x40_0000]);
    let user: Vec<_> = t.user_accessible().map(|m| m.vaddr).collect();
    assert_eq!(user, [0x1000, 0x3000]);
    let user_global: Vec<_> = t.user_global().map(|m| m.vaddr).collect();
    assert_eq!(user_global, [0x3000]);

    let dump = t.dump().to_string();
    let lines: Vec<&str> = dump.lines().collect();
    assert_eq!(lines.len(), 5, "{dump}");
    assert!(
        lines[0].starts_with("0x0000000000001000-0x0000000000002000 -> 0x000000009000  4K x1 "),
        "{dump}"
    );
    assert!(lines[0].ends_with("rw- u- normal"), "{dump}");
    assert!(lines[1].ends_with("reserved"), "{dump}");
    assert!(lines[2].ends_with("r-- ug normal"), "{dump}");
    assert!(
        lines[3].contains(" 2M x1 ") && lines[3].ends_with("r-x kg normal"),
        "{dump}"
    );
    assert!(lines[4].ends_with("rwx k- normal"), "{dump}");
}
