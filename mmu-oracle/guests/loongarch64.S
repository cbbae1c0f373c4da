# MMU oracle guest for LoongArch64 (QEMU >= 8, machine `virt`, `-cpu la464`, no firmware).
#
# QEMU starts the ELF in direct-address mode at 0x9000_0000_0020_0000. The guest maps
# itself with direct-mapped windows (DMW0: segment 0x9 -> PA, cached, PLV0 and PLV3;
# DMW1: segment 0x8 -> PA, uncached), points PGDL and PGDH at the table under test and
# enables paging. TLB refills go to a software walker that follows LDDIR/LDPTE semantics
# (directory entries are bare table addresses with no valid bit, so a zero entry walks
# physical page 0; bit 6 marks a huge leaf: Dir1 2 MiB, Dir2 1 GiB) but loads every PTE
# in full, keeping NR/NX/RPLV (bits 61-63), which QEMU's LDDIR/LDPTE drop.
# The whole TLB is invalidated before each access. PLV3 probes `ertn` into stubs in the
# DMW0 window, which come back with `syscall`.
#
# Assembled with `llvm-mc-19 --triple=loongarch64`, linked with `ld.lld-19`
# `-Ttext=0x9000000000200000`.
#
# Mailbox (u64 at PA IMG_BASE): 0x00 magic, 0x08 root PA, 0x18 probe count, 0x20 probes
# PA, 0x28 results PA; the guest writes 0x40 done magic, 0x48 progress, 0x50 error code.
# Result (64 bytes): 0x00 status, 0x08 value, 0x10 ESTAT, 0x18 BADV, 0x20 ERA,
# 0x28 for a store whose pre-load faulted: the PA read back from the TLB (-1: none),
# 0x30 pre-load status, 0x38 pre-load value.

    .set DMW_CACHED, 0x9000000000000000
    .set MAILBOX, 0x9000000001000000
    .set M_MAGIC, 0x00
    .set M_ROOT, 0x08
    .set M_NPROBES, 0x18
    .set M_PROBES, 0x20
    .set M_RESULTS, 0x28
    .set M_DONE, 0x40
    .set M_PROGRESS, 0x48
    .set M_ERROR, 0x50
    .set DONE_MAGIC, 0x454E4F44
    .set ERR_BAD_MAILBOX, 1

    .set CRMD, 0x0
    .set PRMD, 0x1
    .set ECFG, 0x4
    .set ESTAT, 0x5
    .set ERA, 0x6
    .set BADV, 0x7
    .set EENTRY, 0xc
    .set TLBIDX, 0x10
    .set TLBEHI, 0x11
    .set TLBELO0, 0x12
    .set TLBELO1, 0x13
    .set ASID, 0x18
    .set PGDL, 0x19
    .set PGDH, 0x1a
    .set PGD, 0x1b
    .set PWCL, 0x1c
    .set PWCH, 0x1d
    .set STLBPS, 0x1e
    .set SAVE0, 0x30
    .set SAVE1, 0x31
    .set TLBRENTRY, 0x88
    .set TLBRBADV, 0x89
    .set TLBRSAVE, 0x8b
    .set TLBRELO0, 0x8c
    .set TLBRELO1, 0x8d
    .set TLBREHI, 0x8e
    .set DMW0, 0x180
    .set DMW1, 0x181

    .text
    .globl _start
_start:
    li.d $t0, 0x9000000000000019
    csrwr $t0, DMW0
    li.d $t0, 0x8000000000000001
    csrwr $t0, DMW1
    la.pcrel $t0, exc_entry
    csrwr $t0, EENTRY
    la.pcrel $t0, tlb_refill
    bstrpick.d $t0, $t0, 47, 0
    csrwr $t0, TLBRENTRY
    csrwr $zero, ECFG
    la.pcrel $sp, stack_top
    li.d $s0, MAILBOX
    ld.d $t0, $s0, M_MAGIC
    li.d $t1, 0x4C4341524F554D4D
    li.d $a0, ERR_BAD_MAILBOX
    bne $t0, $t1, fail

    li.d $t0, 12 | (9 << 5) | (21 << 10) | (9 << 15) | (30 << 20) | (9 << 25)
    csrwr $t0, PWCL
    li.d $t0, 39 | (9 << 6)
    csrwr $t0, PWCH
    li.d $t0, 12
    csrwr $t0, STLBPS
    li.d $t0, 12
    csrwr $t0, TLBREHI
    csrwr $zero, ASID
    ld.d $t0, $s0, M_ROOT
    csrwr $t0, PGDL
    ld.d $t0, $s0, M_ROOT
    csrwr $t0, PGDH
    invtlb 0, $zero, $zero
    li.d $t0, 0xb0                      # PG | DATF = CC | DATM = CC, PLV0, IE = 0
    csrwr $t0, CRMD

    # s1 count, s2 probes, s3 results (DMW0 VAs), s4 index, s5 VA, s6 flags, s7 record.
    li.d $t1, DMW_CACHED
    ld.d $s1, $s0, M_NPROBES
    ld.d $s2, $s0, M_PROBES
    or $s2, $s2, $t1
    ld.d $s3, $s0, M_RESULTS
    or $s3, $s3, $t1
    move $s4, $zero
probe_loop:
    bgeu $s4, $s1, probes_done
    st.d $s4, $s0, M_PROGRESS
    slli.d $t0, $s4, 4
    add.d $t0, $t0, $s2
    ld.d $s5, $t0, 0
    ld.d $s6, $t0, 8
    bstrins.d $s5, $zero, 2, 0
    andi $s6, $s6, 0x103
    slli.d $s7, $s4, 6
    add.d $s7, $s7, $s3
    li.d $t0, 2
    st.d $zero, $s7, 0x28
    st.d $t0, $s7, 0x30
    st.d $zero, $s7, 0x38
    # Store: load the word first with the same privilege and store back what was read;
    # if that load faults, store a marker naming the probe.
    li.d $a3, 0x80000000
    or $a3, $a3, $s4
    slli.d $a3, $a3, 32
    andi $t0, $s6, 1
    beqz $t0, 1f
    move $a1, $s5
    andi $a2, $s6, 0x100
    bl do_access
    st.d $a0, $s7, 0x30
    st.d $a4, $s7, 0x38
    bnez $a0, 1f
    move $a3, $a4
1:  move $a1, $s5
    move $a2, $s6
    bl do_access
    st.d $a0, $s7, 0x00
    st.d $a4, $s7, 0x08
    st.d $a5, $s7, 0x10
    st.d $a6, $s7, 0x18
    st.d $a7, $s7, 0x20
    # A store that succeeded where the load of the same word faulted (a write-only page)
    # left a marker; read its physical address back from the TLB entry the refill made.
    bnez $a0, 6f
    andi $t0, $s6, 1
    beqz $t0, 6f
    ld.d $t0, $s7, 0x30
    beqz $t0, 6f
    move $a1, $s5
    bl tlb_lookup
    st.d $a0, $s7, 0x28
6:  addi.d $s4, $s4, 1
    b probe_loop

probes_done:
    li.d $t0, DONE_MAGIC
    st.d $t0, $s0, M_DONE
    b exit
fail:
    st.d $a0, $s0, M_ERROR
exit:
    li.d $t0, 0x80000000100E001C        # GED sleep control, uncached window
    li.d $t1, 0x34
    st.b $t1, $t0, 0
2:  idle 0
    b 2b

# do_access: a1 = word VA, a2 = kind (0 load, 1 store, 2 fetch) | 0x100 for PLV3,
# a3 = value to store. Returns a0 = status (0 done, 1 exception), a4 = loaded value,
# a5..a7 = ESTAT, BADV, ERA. Clobbers t0, t1.
do_access:
    la.pcrel $t0, recover
    st.d $sp, $t0, 0
    st.d $ra, $t0, 8
    move $a0, $zero
    move $a4, $zero
    move $a5, $zero
    move $a6, $zero
    move $a7, $zero
    invtlb 0, $zero, $zero
    andi $t1, $a2, 0x100
    bnez $t1, 3f
    andi $t1, $a2, 1
    bnez $t1, 1f
    andi $t1, $a2, 2
    bnez $t1, 2f
    ld.d $a4, $a1, 0
    jr $ra
1:  st.d $a3, $a1, 0
    jr $ra
2:  jirl $ra, $a1, 0
3:  la.pcrel $t0, user_load
    andi $t1, $a2, 1
    beqz $t1, 4f
    la.pcrel $t0, user_store
4:  andi $t1, $a2, 2
    beqz $t1, 5f
    la.pcrel $t0, user_exec
5:  csrwr $t0, ERA
    li.d $t0, 3                         # PPLV = 3, PIE = 0
    csrwr $t0, PRMD
    ertn

# tlb_lookup: a1 = VA. Returns a0 = the physical address the TLB maps it to, or -1.
# Clobbers t0..t3.
tlb_lookup:
    bstrins.d $a1, $zero, 12, 0         # VPPN: the even/odd pair
    csrwr $a1, TLBEHI
    tlbsrch
    csrrd $t0, TLBIDX
    li.d $a0, -1
    srli.d $t1, $t0, 31
    andi $t1, $t1, 1
    bnez $t1, 1f                        # NE: no entry
    tlbrd
    csrrd $t0, TLBIDX
    bstrpick.d $t2, $t0, 29, 24         # PS
    srl.d $t1, $s5, $t2
    andi $t1, $t1, 1
    csrrd $t3, TLBELO0
    beqz $t1, 2f
    csrrd $t3, TLBELO1
2:  bstrpick.d $t3, $t3, 47, 12
    slli.d $t3, $t3, 12
    li.d $t1, -1
    sll.d $t1, $t1, $t2
    and $t3, $t3, $t1
    andn $t1, $s5, $t1
    or $a0, $t3, $t1
1:  jr $ra

# PLV3 stubs (DMW0 allows PLV3).
user_load:
    ld.d $a4, $a1, 0
    syscall 0
user_store:
    st.d $a3, $a1, 0
    syscall 0
user_exec:
    jirl $zero, $a1, 0

    .balign 4096
exc_entry:
    csrrd $a5, ESTAT
    csrrd $a6, BADV
    csrrd $a7, ERA
    li.d $a0, 1
    bstrpick.d $t0, $a5, 21, 16
    li.d $t1, 0xb                       # SYS: a PLV3 stub finished its access
    bne $t0, $t1, 1f
    move $a0, $zero
1:  la.pcrel $t0, recover
    ld.d $sp, $t0, 0
    ld.d $ra, $t0, 8
    jr $ra

# TLB refill: runs in direct-address mode (physical addresses).
    .balign 4096
tlb_refill:
    csrwr $t0, TLBRSAVE
    csrwr $t1, SAVE0
    csrwr $t2, SAVE1
    csrrd $t0, PGD
    csrrd $t1, TLBRBADV
    # Dir3 (bits 47:39)
    bstrpick.d $t2, $t1, 47, 39
    alsl.d $t2, $t2, $t0, 3
    ld.d $t0, $t2, 0
    bstrpick.d $t0, $t0, 47, 12
    slli.d $t0, $t0, 12
    # Dir2 (bits 38:30)
    bstrpick.d $t2, $t1, 38, 30
    alsl.d $t2, $t2, $t0, 3
    ld.d $t0, $t2, 0
    andi $t2, $t0, 0x40
    bnez $t2, huge_1g
    bstrpick.d $t0, $t0, 47, 12
    slli.d $t0, $t0, 12
    # Dir1 (bits 29:21)
    bstrpick.d $t2, $t1, 29, 21
    alsl.d $t2, $t2, $t0, 3
    ld.d $t0, $t2, 0
    andi $t2, $t0, 0x40
    bnez $t2, huge_2m
    bstrpick.d $t0, $t0, 47, 12
    slli.d $t0, $t0, 12
    # PT: the even/odd pair (bits 20:13)
    bstrpick.d $t2, $t1, 20, 13
    alsl.d $t2, $t2, $t0, 4
    ld.d $t0, $t2, 0
    csrwr $t0, TLBRELO0
    ld.d $t0, $t2, 8
    csrwr $t0, TLBRELO1
    li.d $t0, 12
    b fill
huge_2m:
    li.d $t2, 20
    b huge
huge_1g:
    li.d $t2, 29
huge:
    # Two halves of the huge page; HG (bit 12) becomes G (bit 6), GH is cleared.
    bstrpick.d $t1, $t0, 12, 12
    bstrins.d $t0, $zero, 6, 6
    bstrins.d $t0, $zero, 12, 12
    slli.d $t1, $t1, 6
    or $t0, $t0, $t1
    csrwr $t0, TLBRELO0
    csrrd $t0, TLBRELO0
    li.d $t1, 1
    sll.d $t1, $t1, $t2
    add.d $t0, $t0, $t1
    csrwr $t0, TLBRELO1
    move $t0, $t2
fill:
    li.d $t1, 0x3f
    csrxchg $t0, $t1, TLBREHI
    tlbfill
    csrrd $t0, TLBRSAVE
    csrrd $t1, SAVE0
    csrrd $t2, SAVE1
    ertn

    .balign 16
recover:
    .dword 0, 0
    .balign 4096
    .skip 16384
stack_top:
