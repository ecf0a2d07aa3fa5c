#!/bin/sh
# /init of the layerconf guest (busybox sh, from the initramfs built by vm/initramfs.py).
#
# 1. proc/sys/devtmpfs, insmod the modules in /lib/modules/order
# 2. the host root, read-only over 9p (tag hostroot, cache=loose), as the lower layer of an
#    overlay with a tmpfs upper at /newroot: a writable root that is the host's file tree
# 3. fresh proc/sys/dev/devpts/run/dev/shm under /newroot; the scratch fs at /run/layerconf:
#    ext4 on /dev/vda (layerconf.scratch=ext4) or tmpfs. Whiteouts and trusted.* xattrs need a
#    real local fs (never use 9p paths as scratch), and 6.12's file-backed erofs needs a fs with
#    read_folio, which tmpfs lacks (ENOTBLK).
# 4. read-write 9p shares from layerconf.rw=tag:/path,... mounted at the same paths; the
#    user-mode network when layerconf.net=user
# 5. chroot /newroot and run the agent with the host's python; power off when it exits
#
# Console lines starting with "LAYERCONF-" are read by harness/backends/vm.py.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

CMD=" $(cat /proc/cmdline) "
getarg() { case "$CMD" in *" $1="*) v=${CMD##* $1=}; echo "${v%% *}";; *) echo "$2";; esac; }
die() { echo "LAYERCONF-INIT-FAIL $*"; sync; poweroff -f; sleep 5; exit 1; }

MODE=$(getarg layerconf.mode agent)
if [ "$MODE" = probe ]; then            # accelerator probe: the kernel reached user space
    echo "LAYERCONF-PROBE-OK"
    poweroff -f
fi

up() { read u _ < /proc/uptime; echo $u; }
T_START=$(up)
for m in $(cat /lib/modules/order); do
    insmod "/lib/modules/$m.ko" || echo "LAYERCONF-INSMOD-FAIL $m"
done

T_MODS=$(up)
mkdir -p /host /ovl /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /host \
    || die "9p mount of the host root (tag hostroot)"
mount -t tmpfs -o mode=0755 tmpfs /ovl && mkdir -p /ovl/u /ovl/w || die "tmpfs for the root overlay"
mount -t overlay overlay -o lowerdir=/host,upperdir=/ovl/u,workdir=/ovl/w /newroot \
    || die "overlay root"

R=/newroot
mount -t proc proc $R/proc || die "proc"
mount -t sysfs sys $R/sys || die "sysfs"
mount -t devtmpfs dev $R/dev || die "devtmpfs"
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t tmpfs -o mode=0755 tmpfs $R/run || die "tmpfs /run"
mkdir -p $R/run/layerconf
SCRATCH=$(getarg layerconf.scratch tmpfs)
MODDIR=$(getarg layerconf.modules "")
if [ "$SCRATCH" = ext4 ]; then      # a host-made ext4 image as /dev/vda (see harness/backends/vm.py)
    for m in $(cat "/host$MODDIR/extra" 2>/dev/null); do
        [ -d /sys/module/$m ] || insmod "/host$MODDIR/$m.ko" || echo "LAYERCONF-INSMOD-FAIL $m"
        [ "$m" = ext4 ] && break
    done
    mount -t ext4 -o noatime /dev/vda $R/run/layerconf || die "ext4 scratch on /dev/vda"
else
    mount -t tmpfs -o mode=1777,size=80% scratch $R/run/layerconf || die "tmpfs scratch"
fi
chmod 1777 $R/run/layerconf
mkdir -p $R/run/layerconf/tmp && chmod 1777 $R/run/layerconf/tmp
[ -d /sys/fs/fuse/connections ] && mount -t fusectl fusectl $R/sys/fs/fuse/connections 2>/dev/null

RW=$(getarg layerconf.rw "")
for spec in $(echo "$RW" | tr ',' ' '); do
    tag=${spec%%:*}; path=${spec#*:}
    mkdir -p "$R$path" && mount -t 9p -o trans=virtio,version=9p2000.L,rw,cache=none,msize=262144 \
        "$tag" "$R$path" || die "9p rw share $tag at $path"
done

# QEMU user-mode network (layerconf.net=user, only for scenarios that need the network): the
# slirp defaults, guest 10.0.2.15, gateway 10.0.2.2, DNS 10.0.2.3.
if [ "$(getarg layerconf.net "")" = user ]; then
    for m in $(cat "/host$MODDIR/extra" 2>/dev/null); do
        [ -d /sys/module/$m ] || insmod "/host$MODDIR/$m.ko" || echo "LAYERCONF-INSMOD-FAIL $m"
        [ "$m" = virtio_net ] && break
    done
    ip link set lo up && ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 \
        && ip route add default via 10.0.2.2 || die "user-mode network (virtio_net, eth0)"
    rm -f $R/etc/resolv.conf && echo "nameserver 10.0.2.3" > $R/etc/resolv.conf
fi

hostname layerconf-vm
PY=$(getarg layerconf.python /usr/bin/python3)
AGENT=$(getarg layerconf.agent "")
[ -n "$AGENT" ] || die "no layerconf.agent= on the kernel command line"
# test inside the chroot: a venv's python is a symlink to an absolute path
if [ -x $R/usr/bin/test ] && ! chroot $R /usr/bin/test -x "$PY"; then
    die "python $PY is not executable in the guest (not readable by the host user that runs qemu?)"
fi
echo "LAYERCONF-INIT-READY start=$T_START modules=$T_MODS ready=$(up) scratch=$SCRATCH"

env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    TERM=dumb TMPDIR=/run/layerconf/tmp LAYERCONF_SCRATCH=/run/layerconf LAYERCONF_IN_VM=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    chroot $R "$PY" -S "$AGENT"
echo "LAYERCONF-AGENT-EXIT rc=$?"
sync
poweroff -f
