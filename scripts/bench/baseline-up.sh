#!/usr/bin/env bash
# baseline-up.sh DISK KERNEL INITRD BINDIR FILESDIR REGISTRY
#
# The benchmark baseline for a whole `envctl up`, not part of envctl: what
# a user would script by hand with virt-install, scp, ssh and crictl. It
# boots the image (baseline-lib.sh), copies CRI-O, pinns, crictl and runc
# from BINDIR with scp, writes CRI-O's configuration and starts it, then
# runs the image-volume lifecycle test's 17 crictl steps over ssh, one ssh
# per step, with the test images from REGISTRY (host:port) forwarded into
# the guest as localhost:5000 by `ssh -R`. FILESDIR holds the crictl JSON
# files. It prints "boot upload install test total failed" (seconds, then
# the number of steps that did not behave), then removes the VM. Used by
# `make bench` (cmd/envctl/bench_test.go).
set -euo pipefail
source "$(dirname "$0")/baseline-lib.sh"
bindir=$4 filesdir=$5 registry=$6
stage_image "$1" "$2" "$3"
t0=$(now)
boot_vm "$disk" "$kernel" "$initrd"
boot=$(since "$t0")

t=$(now)
scp "${sshopts[@]}" -i "$key" -P "$port" "$bindir"/crio "$bindir"/pinns "$bindir"/crictl "$bindir"/runc root@127.0.0.1:/usr/local/bin/
g mkdir -p /root/t
scp "${sshopts[@]}" -i "$key" -P "$port" "$filesdir"/*.json root@127.0.0.1:/root/t/
upload=$(since "$t")

t=$(now)
g 'bash -s' <<'EOT'
set -e
chmod 755 /usr/local/bin/crio /usr/local/bin/pinns /usr/local/bin/crictl /usr/local/bin/runc
mkdir -p /etc/crio/crio.conf.d /etc/containers /etc/cni/net.d
cat > /etc/crio/crio.conf.d/10-baseline.conf <<'EOF'
[crio]
storage_driver = "overlay"
[crio.api]
listen = "/var/run/crio/crio.sock"
[crio.runtime]
default_runtime = "runc"
cgroup_manager = "systemd"
pinns_path = "/usr/local/bin/pinns"
log_level = "debug"
[crio.runtime.runtimes.runc]
runtime_path = "/usr/local/bin/runc"
runtime_type = "oci"
runtime_root = "/run/runc"
monitor_path = "/usr/bin/conmon"
monitor_cgroup = "system.slice"
[crio.image]
pause_image = "localhost:5000/envctl/pause:v1"
pause_command = "/pause"
signature_policy = "/etc/containers/policy.json"
[crio.network]
network_dir = "/etc/cni/net.d"
plugin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]
EOF
cat > /etc/containers/registries.conf <<'EOF'
unqualified-search-registries = []
[[registry]]
location = "localhost:5000"
insecure = true
EOF
echo '{"default": [{"type": "insecureAcceptAnything"}]}' > /etc/containers/policy.json
cat > /etc/crictl.yaml <<'EOF'
runtime-endpoint: unix:///var/run/crio/crio.sock
image-endpoint: unix:///var/run/crio/crio.sock
timeout: 120
disable-pull-on-run: true
EOF
cat > /etc/cni/net.d/10-baseline.conflist <<'EOF'
{"cniVersion": "0.3.1", "name": "baseline", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": "10.85.0.0/16"}]]}},
  {"type": "loopback"}]}
EOF
cat > /etc/systemd/system/crio.service <<'EOF'
[Unit]
After=network.target
[Service]
Type=notify
ExecStart=/usr/local/bin/crio
Delegate=yes
KillMode=process
EOF
modprobe overlay
systemctl daemon-reload
systemctl start crio
until crictl info >/dev/null 2>&1; do sleep 1; done
EOT
install=$(since "$t")

t=$(now)
ssh "${sshopts[@]}" -i "$key" -p "$port" -N -R "127.0.0.1:5000:$registry" root@127.0.0.1 &
fwd=$!
until g "exec 3<>/dev/tcp/127.0.0.1/5000" 2>/dev/null; do sleep 0.2; done
failed=0
# ok CMD... / bad CMD...: one step, which must succeed / fail.
ok() { g "$@" >/dev/null 2>&1 || { failed=$((failed + 1)); echo "baseline: step failed: $*" >&2; }; }
bad() { ! g "$@" >/dev/null 2>&1 || { failed=$((failed + 1)); echo "baseline: step did not fail: $*" >&2; }; }
vol=localhost:5000/envctl/artifact:v1
ok crictl pull localhost:5000/envctl/workload:v1
ok crictl pull $vol
ctr=$(g crictl run /root/t/container.json /root/t/sandbox.json | tail -n 1) || failed=$((failed + 1))
ok "test \"\$(crictl exec $ctr cat /volume/dir/file)\" = 1"
ok "test \"\$(crictl exec $ctr cat /volume/file)\" = 2"
bad crictl rmi $vol
ok "crictl inspect -o json $ctr | grep -q \$(crictl inspecti -o go-template --template '{{.status.id}}' $vol)"
ok crictl rm -f "$ctr"
ok crictl rmi $vol
g crictl rmp -fa >/dev/null 2>&1
ok crictl pull $vol
ctr=$(g crictl run /root/t/container-subpath.json /root/t/sandbox-subpath.json | tail -n 1) || failed=$((failed + 1))
ok "test \"\$(crictl exec $ctr cat /volume/file)\" = 1"
ok crictl rm -f "$ctr"
g crictl rmp -fa >/dev/null 2>&1
bad crictl run /root/t/container-invalid.json /root/t/sandbox-invalid.json
ok "journalctl -u crio --no-pager -o cat | grep -q 'does not exist in image volume'"
g crictl rmp -fa >/dev/null 2>&1
ok crictl rmi $vol
bad crictl run --no-pull /root/t/container.json /root/t/sandbox-notpulled.json
g crictl rmp -fa >/dev/null 2>&1
test_s=$(since "$t")
echo "$boot $upload $install $test_s $(since "$t0") $failed"
