"""Run a four-instruction guest under KVM: the smallest boot there is (no qemu needed).

Exit 0 and print what ran when the guest reached its `hlt`; exit 1 with the reason otherwise.
Used by lab/vm/kvm-probe.sh when qemu is not installed yet: whether /dev/kvm exists says nothing
about whether a guest can run on it.
"""
import ctypes
import fcntl
import mmap
import os
import struct
import sys
import time

KVM_GET_API_VERSION, KVM_CREATE_VM, KVM_GET_VCPU_MMAP_SIZE = 0xAE00, 0xAE01, 0xAE04
KVM_CREATE_VCPU, KVM_SET_USER_MEMORY_REGION, KVM_RUN = 0xAE41, 0x4020AE46, 0xAE80
KVM_GET_SREGS, KVM_SET_SREGS, KVM_SET_REGS = 0x8138AE83, 0x4138AE84, 0x4090AE82
KVM_EXIT_IO, KVM_EXIT_HLT = 2, 5
LOOPS = 200000
# Real mode at 0x1000: mov ecx, LOOPS; 1: dec ecx; jnz 1b; mov al, 0x42; out 0x10, al; hlt
CODE = bytes([0x66, 0xB9]) + struct.pack("<I", LOOPS) + bytes([0x66, 0x49, 0x75, 0xFC, 0xB0, 0x42, 0xE6, 0x10, 0xF4])
MAX_SECONDS = 0.1  # 400 k instructions: a fraction of a millisecond on hardware, seconds when each one is emulated


def probe():
    try:
        kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return False, "cannot open /dev/kvm: %s" % e.strerror
    try:
        if fcntl.ioctl(kvm, KVM_GET_API_VERSION) != 12:
            return False, "unexpected KVM API version"
        vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
        mem = mmap.mmap(-1, 0x4000)
        mem[0x1000:0x1000 + len(CODE)] = CODE
        addr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
        fcntl.ioctl(vm, KVM_SET_USER_MEMORY_REGION, struct.pack("IIQQQ", 0, 0, 0, len(mem), addr))
        vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
        size = fcntl.ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE)
        run = mmap.mmap(vcpu, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        sregs = bytearray(312)
        fcntl.ioctl(vcpu, KVM_GET_SREGS, sregs)
        struct.pack_into("Q", sregs, 0, 0)      # cs.base
        struct.pack_into("H", sregs, 12, 0)     # cs.selector
        fcntl.ioctl(vcpu, KVM_SET_SREGS, bytes(sregs))
        regs = [0] * 18
        regs[16], regs[17] = 0x1000, 0x2        # rip, rflags
        fcntl.ioctl(vcpu, KVM_SET_REGS, struct.pack("18Q", *regs))
        seen = []
        t0 = time.monotonic()
        for _exit in range(4):
            fcntl.ioctl(vcpu, KVM_RUN, 0)
            reason = struct.unpack_from("I", run, 8)[0]
            seen.append(reason)
            if reason == KVM_EXIT_HLT:
                break
            if reason != KVM_EXIT_IO:
                return False, "guest stopped with KVM exit reason %d" % reason
        if seen != [KVM_EXIT_IO, KVM_EXIT_HLT]:
            return False, "guest did not reach hlt (exits %s)" % seen
        took = time.monotonic() - t0
        if took > MAX_SECONDS:
            return False, "KVM runs guests but not at hardware speed (400 k instructions took %.1f s)" % took
        return True, "kvm: a guest ran 400 k instructions in %.3f s" % took
    except OSError as e:
        return False, "KVM does not run guests here: %s" % (e.strerror or e)
    finally:
        os.close(kvm)


if __name__ == "__main__":
    ok, why = probe()
    print(why)
    sys.exit(0 if ok else 1)
