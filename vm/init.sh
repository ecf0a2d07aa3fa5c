#!/bin/sh
# /init of the layerconf guest (busybox sh, from the initramfs built by vm/initramfs.py).
#
# 1. proc/sys/devtmpfs, insmod the modules in /lib/modules/order, then those in
#    /lib/modules/extra (ext4 and its dependencies, for the scratch fs)
# 2. run the agent (vm/agent.py) with the guest's python, both from the initramfs; power off
#    when it exits. The agent waits for the host's setup line on its port, then mounts the
#    host's tree and chroots into it. Everything up to that wait depends only on the kernel,
#    the initramfs and qemu's machine arguments, so the host saves the guest's state there
#    once and starts later guests by restoring it (harness/backends/vm.py). Nothing of the host
#    is mounted before: qemu cannot save a guest that has a 9p export mounted.
#
# Console lines starting with "LAYERCONF-" are read by harness/backends/vm.py.
export PATH=/bin:/sbin
up() { read u _ < /proc/uptime; echo $u; }

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
case " $(cat /proc/cmdline) " in *" layerconf.mode=probe "*)   # accelerator probe: user space
    echo "LAYERCONF-PROBE-OK"
    poweroff -f;;
esac

T_START=$(up)
for m in $(cat /lib/modules/order /lib/modules/extra); do
    [ -d /sys/module/$m ] || insmod "/lib/modules/$m.ko" || echo "LAYERCONF-INSMOD-FAIL $m"
done
echo "LAYERCONF-INIT-MODULES start=$T_START modules=$(up)"

env -i PATH=/bin:/sbin PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    "$(cat /lib/layerconf/python)" -S /lib/layerconf/agent.py
echo "LAYERCONF-AGENT-EXIT rc=$?"
sync
poweroff -f
