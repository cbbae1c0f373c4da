# MMU oracle guest for RISC-V 64 (QEMU `virt`, `-bios none`, `-cpu rv64`).
#
# The guest stays in M-mode and needs no mappings of its own: satp holds the table under
# test, and each load/store probe runs with mstatus.MPRV=1 and MPP=S or U (plus SUM/MXR
# when asked), so exactly that access is translated and checked as an S- or U-mode access.
# Fetch probes `mret` into S- or U-mode at the VA. Every trap goes to M-mode; the handler
# records mcause/mtval/mepc and resumes the probe loop. After a page fault the guest makes
# one more, permissive load (S-mode, SUM and MXR) of the same VA to tell a valid leaf from
# no translation.
#
# Assembled with `riscv64-linux-gnu-as -march=rv64imac_zicsr_zifencei`, linked with
# `-N -Ttext=0x80000000`.
#
# Mailbox (u64 at IMG_BASE): 0x00 magic, 0x08 root PA, 0x10 satp mode (8, 9, 10),
# 0x18 probe count, 0x20 probes PA, 0x28 results PA, 0x30 A/D mode (0 keep, 1 hardware
# update: set menvcfg.ADUE, 2 fault: clear it), 0x38 Svpbmt (1: set menvcfg.PBMTE);
# the guest writes 0x40 done magic,
# 0x48 progress, 0x50 error code.
# Result (64 bytes): 0x00 status, 0x08 value, 0x10 mcause, 0x18 mtval, 0x20 mepc,
# 0x28 permissive-load status (2: not made) | its mcause << 8, 0x30 pre-load status,
# 0x38 pre-load value.

    .option norvc
    .set IMG_BASE, 0x81000000
    .set M_MAGIC, 0x00
    .set M_ROOT, 0x08
    .set M_MODE, 0x10
    .set M_NPROBES, 0x18
    .set M_PROBES, 0x20
    .set M_RESULTS, 0x28
    .set M_AD, 0x30
    .set M_PBMT, 0x38
    .set M_DONE, 0x40
    .set M_PROGRESS, 0x48
    .set M_ERROR, 0x50
    .set DONE_MAGIC, 0x454E4F44
    .set ERR_BAD_MAILBOX, 1
    .set ERR_SATP_MODE, 2
    .set ERR_NO_SVPBMT, 3

    .set MPP_S, (1 << 11)
    .set MPP_MASK, (3 << 11)
    .set MPRV, (1 << 17)
    .set SUM, (1 << 18)
    .set MXR, (1 << 19)
    .set CSR_MENVCFG, 0x30a

    .text
    .globl _start
_start:
    la t0, trap_entry
    csrw mtvec, t0
    la sp, stack_top
    li s0, IMG_BASE
    ld t0, M_MAGIC(s0)
    li t1, 0x4C4341524F554D4D
    li a0, ERR_BAD_MAILBOX
    bne t0, t1, fail

    # PMP entry 0: the whole address space, RWX, so S/U accesses and walks are allowed.
    li t0, -1
    csrw pmpaddr0, t0
    li t0, 0x1f
    csrw pmpcfg0, t0

    ld t0, M_AD(s0)
    li t1, 1
    slli t2, t1, 61
    bne t0, t1, 1f
    csrs CSR_MENVCFG, t2
1:  li t1, 2
    bne t0, t1, 2f
    csrc CSR_MENVCFG, t2
2:  ld t0, M_PBMT(s0)
    beqz t0, 3f
    li t1, 1
    slli t1, t1, 62
    csrs CSR_MENVCFG, t1
    csrr t2, CSR_MENVCFG
    and t2, t2, t1
    li a0, ERR_NO_SVPBMT
    beqz t2, fail
3:
    ld t0, M_ROOT(s0)
    srli t0, t0, 12
    ld t1, M_MODE(s0)
    slli t1, t1, 60
    or t0, t0, t1
    csrw satp, t0
    csrr t2, satp
    li a0, ERR_SATP_MODE
    bne t2, t0, fail
    sfence.vma

    # s1 count, s2 probes, s3 results, s4 index, s5 VA, s6 flags, s7 record.
    ld s1, M_NPROBES(s0)
    ld s2, M_PROBES(s0)
    ld s3, M_RESULTS(s0)
    li s4, 0
probe_loop:
    bgeu s4, s1, probes_done
    sd s4, M_PROGRESS(s0)
    slli t0, s4, 4
    add t0, t0, s2
    ld s5, 0(t0)
    ld s6, 8(t0)
    andi s5, s5, -8
    li t1, 0x703
    and s6, s6, t1
    slli s7, s4, 6
    add s7, s7, s3
    li t0, 2
    sd t0, 0x28(s7)
    sd t0, 0x30(s7)
    sd zero, 0x38(s7)
    # Store: load the word first with the same privilege and store back what was read;
    # if that load faults, store a marker naming the probe.
    li a3, 0x80000000
    or a3, a3, s4
    slli a3, a3, 32
    andi t0, s6, 1
    beqz t0, 1f
    mv a1, s5
    andi a2, s6, 0x700
    call do_access
    sd a0, 0x30(s7)
    sd a4, 0x38(s7)
    bnez a0, 1f
    mv a3, a4
1:  mv a1, s5
    mv a2, s6
    call do_access
    sd a0, 0x00(s7)
    sd a4, 0x08(s7)
    sd a5, 0x10(s7)
    sd a6, 0x18(s7)
    sd a7, 0x20(s7)
    beqz a0, 3f
    li t0, 12
    beq a5, t0, 2f
    li t0, 13
    beq a5, t0, 2f
    li t0, 15
    bne a5, t0, 3f
2:  mv a1, s5
    li a2, 0x600
    call do_access
    slli t0, a5, 8
    or a0, a0, t0
    sd a0, 0x28(s7)
3:  addi s4, s4, 1
    j probe_loop

probes_done:
    li t0, DONE_MAGIC
    sd t0, M_DONE(s0)
    j exit
fail:
    sd a0, M_ERROR(s0)
exit:
    li t0, 0x100000
    li t1, 0x5555
    sw t1, 0(t0)
4:  wfi
    j 4b

# do_access: a1 = word VA, a2 = kind (0 load, 1 store, 2 fetch) | 0x100 U-mode | 0x200 SUM
# | 0x400 MXR, a3 = value to store. Returns a0 = status (0 done, 1 trap), a4 = loaded
# value, a5..a7 = mcause, mtval, mepc. Clobbers t0, t1.
do_access:
    la t0, recover
    sd sp, 0(t0)
    sd ra, 8(t0)
    li a0, 0
    li a4, 0
    li a5, 0
    li a6, 0
    li a7, 0
    li t0, MPP_MASK | MPRV | SUM | MXR
    csrc mstatus, t0
    andi t1, a2, 0x100
    bnez t1, 1f
    li t0, MPP_S
    csrs mstatus, t0
1:  andi t1, a2, 0x200
    beqz t1, 2f
    li t0, SUM
    csrs mstatus, t0
2:  andi t1, a2, 0x400
    beqz t1, 3f
    li t0, MXR
    csrs mstatus, t0
3:  andi t1, a2, 2
    bnez t1, 5f
    li t0, MPRV
    andi t1, a2, 1
    bnez t1, 4f
    # Nothing but the probed access may touch memory while MPRV is set.
    csrs mstatus, t0
    ld a4, 0(a1)
    csrc mstatus, t0
    ret
4:  csrs mstatus, t0
    sd a3, 0(a1)
    csrc mstatus, t0
    ret
5:  csrw mepc, a1
    mret

    .align 4
trap_entry:
    li t0, MPRV
    csrc mstatus, t0
    csrr a5, mcause
    csrr a6, mtval
    csrr a7, mepc
    li a0, 1
    la t0, recover
    ld sp, 0(t0)
    ld ra, 8(t0)
    ret

    .align 4
recover:
    .dword 0, 0
    .align 12
    .skip 16384
stack_top:
