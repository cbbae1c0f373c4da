// MMU oracle guest for AArch64 (QEMU `virt`, `-cpu cortex-a72`, started at EL1, MMU off).
//
// The harness maps itself in TTBR1 (VA 0xFFFF_0000_0000_0000 + PA, 1 GiB blocks of
// PA 0..4 GiB, EL1 only); the table under test goes in TTBR0 unchanged. For each probe the
// guest records PAR_EL1 after the matching AT instruction, then makes the real access:
// LDR/STR (EL1), LDTR/STTR (EL0 permissions), BLR to the VA (EL1 fetch) or ERET to the VA
// at EL0 (EL0 fetch). Exceptions record ESR/FAR/ELR and resume the probe loop.
//
// Assembled with `aarch64-linux-gnu-as`, linked with `-N -Ttext=0x40200000`.
//
// Mailbox (u64 at IMG_BASE): 0x00 magic, 0x08 root PA, 0x10 MAIR_EL1, 0x18 probe count,
// 0x20 probes PA, 0x28 results PA; the guest writes 0x40 done magic, 0x48 progress,
// 0x50 error code.
// Result (64 bytes): 0x00 status, 0x08 value, 0x10 ESR, 0x18 FAR, 0x20 ELR, 0x28 PAR,
// 0x30 pre-load status, 0x38 pre-load value.

    .set IMG_BASE, 0x41000000
    .set M_MAGIC, 0x00
    .set M_ROOT, 0x08
    .set M_MAIR, 0x10
    .set M_NPROBES, 0x18
    .set M_PROBES, 0x20
    .set M_RESULTS, 0x28
    .set M_DONE, 0x40
    .set M_PROGRESS, 0x48
    .set M_ERROR, 0x50
    .set DONE_MAGIC, 0x454E4F44
    .set ERR_BAD_MAILBOX, 1

    .text
    .globl _start
_start:
    msr daifset, #0xf
    msr spsel, #1
    ldr x20, =IMG_BASE
    ldr x0, [x20, #M_MAGIC]
    ldr x1, =0x4C4341524F554D4D
    cmp x0, x1
    b.ne bad_mailbox

    ldr x0, [x20, #M_MAIR]
    msr mair_el1, x0

    // TCR_EL1: T0SZ=T1SZ=16, 4 KiB granules, inner-shareable WBWA walks, IPS = PARange.
    mrs x1, id_aa64mmfr0_el1
    and x1, x1, #0xf
    ldr x2, =0xB5103510
    orr x2, x2, x1, lsl #32
    msr tcr_el1, x2

    // Harness table: l0[0] -> l1; l1[0] device block (idx 0), l1[1..3] normal (idx 1).
    adr x4, harness_l0
    adr x3, harness_l1
    mov x0, x4
    mov x1, #1024
1:  str xzr, [x0], #8
    subs x1, x1, #1
    b.ne 1b
    orr x5, x3, #3
    str x5, [x4]
    ldr x5, =0x0060000000000401         // block | AF | idx 0 | PXN | UXN
    str x5, [x3]
    ldr x6, =0x0040000000000705         // block | AF | SH inner | idx 1 | UXN
    mov x1, #1
2:  orr x5, x6, x1, lsl #30
    str x5, [x3, x1, lsl #3]
    add x1, x1, #1
    cmp x1, #4
    b.ne 2b

    msr ttbr1_el1, x4
    msr ttbr0_el1, x4                   // identity while the MMU is switched on
    dsb ish
    isb
    tlbi vmalle1
    dsb ish
    isb
    ldr x0, =0x30D01805                 // M | C | I | RES1
    msr sctlr_el1, x0
    isb

    // Continue at the TTBR1 alias.
    adr x0, high_entry
    movk x0, #0xFFFF, lsl #48
    br x0

high_entry:
    adr x0, vectors
    msr vbar_el1, x0
    adr x0, stack_top
    mov sp, x0
    movk x20, #0xFFFF, lsl #48
    ldr x0, [x20, #M_ROOT]
    msr ttbr0_el1, x0
    dsb ish
    tlbi vmalle1
    dsb ish
    isb

    // x21 count, x22 probes, x23 results, x24 index.
    ldr x21, [x20, #M_NPROBES]
    ldr x22, [x20, #M_PROBES]
    movk x22, #0xFFFF, lsl #48
    ldr x23, [x20, #M_RESULTS]
    movk x23, #0xFFFF, lsl #48
    mov x24, #0
probe_loop:
    cmp x24, x21
    b.hs probes_done
    str x24, [x20, #M_PROGRESS]
    add x0, x22, x24, lsl #4
    ldp x25, x26, [x0]
    and x25, x25, #~7
    ldr x0, =0x103
    and x26, x26, x0
    add x27, x23, x24, lsl #6

    // PAR_EL1 for this access kind and privilege (fetches use the read translation).
    tbnz x26, #8, 3f
    tbnz x26, #0, 4f
    at s1e1r, x25
    b 6f
4:  at s1e1w, x25
    b 6f
3:  tbnz x26, #0, 5f
    at s1e0r, x25
    b 6f
5:  at s1e0w, x25
6:  isb
    mrs x0, par_el1
    str x0, [x27, #0x28]

    mov x0, #2
    str x0, [x27, #0x30]
    str xzr, [x27, #0x38]
    // Store: load the word first with the same privilege and store back what was read;
    // if that load faults, store a marker naming the probe.
    mov x3, #0x80000000
    orr x3, x3, x24
    lsl x3, x3, #32
    tbz x26, #0, 7f
    mov x1, x25
    and x2, x26, #0x100
    bl do_access
    str x10, [x27, #0x30]
    str x11, [x27, #0x38]
    cbnz x10, 7f
    mov x3, x11
7:  mov x1, x25
    mov x2, x26
    bl do_access
    stp x10, x11, [x27, #0x00]
    stp x12, x13, [x27, #0x10]
    str x14, [x27, #0x20]
    add x24, x24, #1
    b probe_loop

probes_done:
    ldr x0, =DONE_MAGIC
    str x0, [x20, #M_DONE]
    b system_off

bad_mailbox:
    mov x0, #ERR_BAD_MAILBOX
    str x0, [x20, #M_ERROR]
system_off:
    dsb sy
    ldr x0, =0x84000008                 // PSCI SYSTEM_OFF
    hvc #0
8:  wfi
    b 8b

// do_access: x1 = word VA, x2 = kind (0 load, 1 store, 2 exec) | 0x100 for EL0,
// x3 = value to store. Returns x10 = status (0 done, 1 exception), x11 = loaded value,
// x12..x14 = ESR, FAR, ELR. Clobbers x9..x15.
do_access:
    adr x9, recover
    mov x10, sp
    stp x10, x30, [x9]
    mov x10, #0
    mov x11, #0
    mov x12, #0
    mov x13, #0
    mov x14, #0
    tbnz x2, #8, user_access
    tbnz x2, #0, 1f
    tbnz x2, #1, 2f
    ldr x11, [x1]
    ret
1:  str x3, [x1]
    ret
2:  blr x1
    ret

user_access:
    tbnz x2, #0, 1f
    tbnz x2, #1, 2f
    ldtr x11, [x1]
    ret
1:  sttr x3, [x1]
    ret
2:  msr elr_el1, x1
    mov x9, #0x3c0                      // EL0t, DAIF masked
    msr spsr_el1, x9
    eret

sync_exception:
    mrs x12, esr_el1
    mrs x13, far_el1
    mrs x14, elr_el1
    mov x10, #1
    adr x9, recover
    ldp x15, x30, [x9]
    mov sp, x15
    ret

    .macro VENTRY
    .balign 0x80
    b sync_exception
    .endm

    .balign 0x800
vectors:
    .rept 16
    VENTRY
    .endr

    .ltorg
    .balign 16
recover:
    .quad 0, 0

    .balign 4096
harness_l0:
    .skip 4096
harness_l1:
    .skip 4096
    .skip 16384
stack_top:
