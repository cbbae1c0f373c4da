# MMU oracle guest for x86_64 (QEMU TCG, machine `pc`, `-cpu max`).
#
# Booted by QEMU's multiboot v1 loader in 32-bit protected mode with paging off. It builds
# its own harness tables, enters long mode, moves to the harness alias
# HIGH + PA (PML4/PML5 slot 511), installs the harness entry in slot 511 of the table under
# test, loads CR3 with that root and runs the probe list from the mailbox.
#
# Assembled with `as --32` and linked with `ld -m elf_i386 -N -Ttext=0x100000`.
#
# Mailbox (u64 fields at IMG_BASE): 0x00 magic, 0x08 root PA, 0x10 flags (bit 0 LA57,
# bit 1 SMEP, bit 2 SMAP), 0x18 probe count, 0x20 probes PA, 0x28 results PA; the guest
# writes 0x40 done magic, 0x48 index of the probe being run, 0x50 error code.
# Probe (16 bytes): va, flags (bit 0 store, bit 1 exec, bit 8 CPL3).
# Result (64 bytes): 0x00 status (0 ok, 1 exception), 0x08 loaded value, 0x10 vector,
# 0x18 error code, 0x20 CR2, 0x28 faulting RIP, 0x30 pre-load status, 0x38 pre-load value.

    .set IMG_BASE, 0x01000000
    .set HIGH, 0xFFFFFF8000000000
    .set USER_VA, 0xFFFFFFFFC0000000
    .set MB_MAGIC, 0x1BADB002
    .set MB_FLAGS, 0
    .set MAILBOX_MAGIC, 0x4C4341524F554D4D
    .set DONE_MAGIC, 0x454E4F44

    .set M_MAGIC, 0x00
    .set M_ROOT, 0x08
    .set M_FLAGS, 0x10
    .set M_NPROBES, 0x18
    .set M_PROBES, 0x20
    .set M_RESULTS, 0x28
    .set M_DONE, 0x40
    .set M_PROGRESS, 0x48
    .set M_ERROR, 0x50

    .set ERR_BAD_MAILBOX, 1
    .set ERR_NO_LA57, 2
    .set ERR_SLOT_IN_USE, 3
    .set ERR_NO_SMEP, 4
    .set ERR_NO_SMAP, 5

    .set KCODE, 0x08
    .set KDATA, 0x10
    .set UDATA, 0x1B
    .set UCODE, 0x23
    .set TSSSEL, 0x28
    .set KCODE32, 0x38

    .text
    .code32
    .align 4
multiboot_header:
    .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

    .globl _start
_start:
    cli
    lgdt gdt_ptr32
    ljmp $KCODE32, $1f
1:  mov $KDATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov $stack_top, %esp

    mov $IMG_BASE, %esi
    cmpl $(MAILBOX_MAGIC & 0xFFFFFFFF), M_MAGIC(%esi)
    jne bad_mailbox32
    cmpl $(MAILBOX_MAGIC >> 32), M_MAGIC+4(%esi)
    jne bad_mailbox32

    # Zero the boot tables.
    mov $tables_start, %edi
    mov $((tables_end - tables_start) / 4), %ecx
    xor %eax, %eax
    rep stosl

    # pd: PA 0..1 GiB in 2 MiB pages, supervisor, RW.
    mov $pd, %edi
    mov $0x83, %eax
    xor %ecx, %ecx
2:  mov %eax, (%edi,%ecx,8)
    add $0x200000, %eax
    inc %ecx
    cmp $512, %ecx
    jne 2b

    movl $(pd + 0x03), pdpt_ident          # identity, supervisor
    movl $(pd + 0x03), pdpt_high           # HIGH alias, supervisor
    movl $(pd_user + 0x07), pdpt_high + 511*8
    movl $(pt_user + 0x07), pd_user
    movl $(user_page + 0x05), pt_user      # user stubs: present, user, read-only
    movl $(pdpt_ident + 0x03), pml4
    movl $(pdpt_high + 0x07), pml4 + 511*8
    movl $(pml4 + 0x07), pml5
    movl $(pml4 + 0x07), pml5 + 511*8

    # CR4 and CR3: 5-level paging if the mailbox asks for it.
    mov M_FLAGS(%esi), %ebx
    test $1, %ebx
    jz 3f
    mov $7, %eax
    xor %ecx, %ecx
    cpuid
    test $(1 << 16), %ecx
    jz no_la57
    mov $0x1020, %eax                      # PAE | LA57
    mov %eax, %cr4
    mov $pml5, %eax
    mov %eax, %cr3
    jmp 4f
3:  mov $0x20, %eax                        # PAE
    mov %eax, %cr4
    mov $pml4, %eax
    mov %eax, %cr3
4:  mov $0xC0000080, %ecx                  # EFER: LME | NXE
    rdmsr
    or $0x900, %eax
    wrmsr
    mov $0x80050033, %eax                  # PG | WP | NE | ET | MP | PE
    mov %eax, %cr0
    ljmp $KCODE, $long_entry

bad_mailbox32:
    mov $ERR_BAD_MAILBOX, %eax
    jmp fail32
no_la57:
    mov $ERR_NO_LA57, %eax
fail32:
    mov %eax, M_ERROR(%esi)
    movl $0, M_ERROR+4(%esi)
    mov $0xf4, %dx
    mov $1, %al
    out %al, %dx
5:  hlt
    jmp 5b

    .code64
long_entry:
    movabs $HIGH, %rax
    lea high_entry(%rip), %rcx
    add %rax, %rcx
    jmp *%rcx

high_entry:
    movabs $HIGH, %r15
    lea stack_top(%rip), %rsp
    movabs $(HIGH + IMG_BASE), %rbx

    # GDT through the alias.
    lea gdt(%rip), %rax
    mov %rax, gdt_ptr64+2(%rip)
    lgdt gdt_ptr64(%rip)

    # TSS: RSP0 on its own stack; 16-byte descriptor at GDT offset TSSSEL.
    lea tss(%rip), %rax
    lea int_stack_top(%rip), %rcx
    mov %rcx, 4(%rax)
    lea gdt+TSSSEL(%rip), %rdi
    mov %rax, %rcx
    and $0xFFFFFF, %ecx
    shl $16, %rcx
    or $0x67, %rcx                         # limit
    movabs $0x0000890000000000, %rdx       # present, 64-bit available TSS
    or %rdx, %rcx
    mov %rax, %rdx
    shr $24, %rdx
    and $0xFF, %edx
    shl $56, %rdx
    or %rdx, %rcx
    mov %rcx, (%rdi)
    mov %rax, %rdx
    shr $32, %rdx
    mov %rdx, 8(%rdi)
    mov $TSSSEL, %ax
    ltr %ax

    # IDT: vectors 0..31 (DPL0 except #BP, which int3 at CPL3 must reach), 0x80 (DPL3).
    lea idt(%rip), %rdi
    lea vec_0(%rip), %rax
    xor %ecx, %ecx
6:  mov $0x8E00, %edx
    cmp $3, %ecx
    jne 7f
    mov $0xEE00, %edx
7:  call set_gate
    add $16, %rdi
    add $16, %rax
    inc %ecx
    cmp $32, %ecx
    jne 6b
    lea idt+0x80*16(%rip), %rdi
    lea vec_syscall(%rip), %rax
    mov $0xEE00, %edx
    call set_gate
    lea idt(%rip), %rax
    mov %rax, idt_ptr64+2(%rip)
    lidt idt_ptr64(%rip)

    # Optional SMEP / SMAP.
    mov M_FLAGS(%rbx), %r8
    test $6, %r8
    jz 8f
    mov $7, %eax
    xor %ecx, %ecx
    cpuid
    mov %cr4, %rax
    test $2, %r8
    jz 9f
    test $(1 << 7), %ebx
    jz no_smep
    or $(1 << 20), %rax
9:  test $4, %r8
    jz 10f
    test $(1 << 20), %ebx
    jz no_smap
    or $(1 << 21), %rax
10: mov %rax, %cr4
    movabs $(HIGH + IMG_BASE), %rbx
8:
    # Root: slot 511 must be free; it gets the harness alias.
    mov M_ROOT(%rbx), %rdi
    lea (%r15,%rdi), %rsi
    cmpq $0, 511*8(%rsi)
    jne slot_in_use
    lea pdpt_high(%rip), %rax
    mov %cr4, %rcx
    test $0x1000, %rcx
    jz 11f
    lea pml4(%rip), %rax
11: sub %r15, %rax
    or $0x07, %rax
    mov %rax, 511*8(%rsi)
    mov %rdi, %cr3

    # Probe loop. rbx mailbox, r12 count, r13 probes, r14 results, rbp index.
    mov M_NPROBES(%rbx), %r12
    mov M_PROBES(%rbx), %r13
    add %r15, %r13
    mov M_RESULTS(%rbx), %r14
    add %r15, %r14
    xor %ebp, %ebp
probe_loop:
    cmp %r12, %rbp
    jae probes_done
    mov %rbp, M_PROGRESS(%rbx)
    mov %rbp, %rax
    shl $4, %rax
    mov (%r13,%rax), %rsi
    and $-8, %rsi
    mov 8(%r13,%rax), %r8
    and $0x103, %r8
    mov %rbp, %rdi
    shl $6, %rdi
    add %r14, %rdi
    movq $2, 0x30(%rdi)                    # no pre-load
    movq $0, 0x38(%rdi)
    # Store: first load the word with the same privilege and store back what was read,
    # so memory keeps its tags; if the load faults, store a marker naming the probe.
    mov %rbp, %r9
    movabs $0x80000000, %rax
    or %rax, %r9
    shl $32, %r9
    mov $0xCCCCCCCC, %eax
    or %rax, %r9
    test $1, %r8
    jz 12f
    push %r8
    and $0x100, %r8
    call do_access
    pop %r8
    mov out_status(%rip), %rax
    mov %rax, 0x30(%rdi)
    mov out_value(%rip), %rax
    mov %rax, 0x38(%rdi)
    cmpq $0, out_status(%rip)
    jne 12f
    mov %rax, %r9
12: call do_access
    mov out_status(%rip), %rax
    mov %rax, 0x00(%rdi)
    mov out_value(%rip), %rax
    mov %rax, 0x08(%rdi)
    mov out_vec(%rip), %rax
    mov %rax, 0x10(%rdi)
    mov out_err(%rip), %rax
    mov %rax, 0x18(%rdi)
    mov out_cr2(%rip), %rax
    mov %rax, 0x20(%rdi)
    mov out_rip(%rip), %rax
    mov %rax, 0x28(%rdi)
    inc %rbp
    jmp probe_loop

probes_done:
    mov $DONE_MAGIC, %eax
    mov %rax, M_DONE(%rbx)
    jmp exit

slot_in_use:
    mov $ERR_SLOT_IN_USE, %eax
    jmp fail64
no_smep:
    mov $ERR_NO_SMEP, %eax
    jmp fail64
no_smap:
    mov $ERR_NO_SMAP, %eax
fail64:
    movabs $(HIGH + IMG_BASE), %rbx
    mov %rax, M_ERROR(%rbx)
exit:
    mov $0xf4, %dx
    xor %eax, %eax
    out %al, %dx
13: hlt
    jmp 13b

# set_gate: rdi = gate, rax = handler, edx = type/attr word (<< 8 already). Clobbers r10.
set_gate:
    mov %rax, %r10
    and $0xFFFF, %r10d
    or $(KCODE << 16), %r10d
    mov %r10d, (%rdi)
    mov %rax, %r10
    shr $16, %r10
    and $0xFFFF, %r10d
    shl $16, %r10d
    or %edx, %r10d
    mov %r10d, 4(%rdi)
    mov %rax, %r10
    shr $32, %r10
    mov %r10d, 8(%rdi)
    movl $0, 12(%rdi)
    ret

# do_access: rsi = word VA, r8 = kind (0 load, 1 store, 2 exec) | 0x100 for CPL3,
# r9 = value to store. Sets out_status (0 done, 1 exception) and out_*.
# Preserves every register except rax, rcx, rdx, r10, r11.
do_access:
    mov %rsp, recover_rsp(%rip)
    movq $0, out_status(%rip)
    movq $0, out_value(%rip)
    movq $0, out_vec(%rip)
    movq $0, out_err(%rip)
    movq $0, out_cr2(%rip)
    movq $0, out_rip(%rip)
    test $0x100, %r8
    jnz user_access
    test $1, %r8
    jnz 1f
    test $2, %r8
    jnz 2f
    mov (%rsi), %rax
    jmp access_ok
1:  mov %r9, (%rsi)
    xor %eax, %eax
    jmp access_ok
2:  jmp *%rsi

user_access:
    movabs $USER_VA, %rcx
    test $1, %r8
    jz 3f
    add $(user_store - user_page), %rcx
    jmp 5f
3:  test $2, %r8
    jz 4f
    add $(user_exec - user_page), %rcx
    jmp 5f
4:  add $(user_load - user_page), %rcx
5:  pushq $UDATA
    pushq $0
    pushq $0x2
    pushq $UCODE
    push %rcx
    iretq

access_ok:
    mov recover_rsp(%rip), %rsp
    mov %rax, out_value(%rip)
    movq $0, out_status(%rip)
    ret

common_fault:
    popq out_vec(%rip)
    popq out_err(%rip)
    popq out_rip(%rip)
    mov %cr2, %rax
    mov %rax, out_cr2(%rip)
    movq $1, out_status(%rip)
    mov recover_rsp(%rip), %rsp
    ret

vec_syscall:
    jmp access_ok

    .macro VEC n, errcode
    .align 16
    .if \errcode == 0
    pushq $0
    .endif
    pushq $\n
    jmp common_fault
    .endm

    .align 16
vec_0:
    VEC 0, 0
    VEC 1, 0
    VEC 2, 0
    VEC 3, 0
    VEC 4, 0
    VEC 5, 0
    VEC 6, 0
    VEC 7, 0
    VEC 8, 1
    VEC 9, 0
    VEC 10, 1
    VEC 11, 1
    VEC 12, 1
    VEC 13, 1
    VEC 14, 1
    VEC 15, 0
    VEC 16, 0
    VEC 17, 1
    VEC 18, 0
    VEC 19, 0
    VEC 20, 0
    VEC 21, 1
    VEC 22, 0
    VEC 23, 0
    VEC 24, 0
    VEC 25, 0
    VEC 26, 0
    VEC 27, 0
    VEC 28, 0
    VEC 29, 1
    VEC 30, 1
    VEC 31, 0

# CPL3 stubs, mapped read-only at USER_VA. rsi = VA, r9 = value.
    .align 4096
user_page:
user_load:
    mov (%rsi), %rax
    int $0x80
user_store:
    mov %r9, (%rsi)
    xor %eax, %eax
    int $0x80
user_exec:
    jmp *%rsi
    .align 4096

    .data
    .align 16
gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF               # 0x08 kernel code, 64-bit
    .quad 0x00CF92000000FFFF               # 0x10 kernel data
    .quad 0x00CFF2000000FFFF               # 0x18 user data
    .quad 0x00AFFA000000FFFF               # 0x20 user code, 64-bit
    .quad 0, 0                             # 0x28 TSS
    .quad 0x00CF9A000000FFFF               # 0x38 kernel code, 32-bit
gdt_end:
    .align 16
gdt_ptr32:
    .word gdt_end - gdt - 1
    .long gdt
    .align 16
gdt_ptr64:
    .word gdt_end - gdt - 1
    .quad 0
    .align 16
idt_ptr64:
    .word 256*16 - 1
    .quad 0
    .align 16
tss:
    .fill 0x68, 1, 0
    .align 8
recover_rsp: .quad 0
out_status: .quad 0
out_value: .quad 0
out_vec: .quad 0
out_err: .quad 0
out_cr2: .quad 0
out_rip: .quad 0

    .bss
    .align 4096
tables_start:
pml5: .skip 4096
pml4: .skip 4096
pdpt_ident: .skip 4096
pdpt_high: .skip 4096
pd: .skip 4096
pd_user: .skip 4096
pt_user: .skip 4096
tables_end:
idt: .skip 4096
    .skip 16384
stack_top:
    .skip 16384
int_stack_top:
