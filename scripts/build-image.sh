#!/usr/bin/env bash
# Builds the spegel-ts container image on this machine, offline, with buildah FROM scratch, and
# writes it as an OCI archive: dist/image/spegel-ts.oci.tar, named
# ghcr.io/spegel-ts/spegel-ts:<version in package.json>. No registry, no docker daemon, no base
# image: the Node.js 24 binary comes from the `node` npm package in node_modules, its shared
# libraries and loader from this machine, the production dependencies from `npm ci --omit=dev`.
# The Dockerfile builds the same layout for machines with a docker engine; docs/image.md
# compares the two and gives the size breakdown.
#
# Usage (as root, after `npm ci` and `npm run build`):  npm run image
# Env: IMAGE_DIST (the build output holding src/, default dist),
#      IMAGE_OUT (archive path, default dist/image/spegel-ts.oci.tar),
#      IMAGE_NAME (default ghcr.io/spegel-ts/spegel-ts:<version>),
#      SOURCE_DATE_EPOCH (image creation time; default the time of the last git commit),
#      IMAGE_TMPDIR (where the private buildah storage goes, default $TMPDIR or /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."

die () { echo "build-image: error: $*" >&2; exit 1; }
note () { echo "build-image: $*" >&2; }

# --- what must be there -----------------------------------------------------------------------
[ "$(uname -s)" = Linux ] || die "needs Linux (buildah and the node binary are Linux-only)"
[ "$(id -u)" = 0 ] || die "needs root: buildah's storage, file ownership (root:root in the image) and vfs layers need it; run: sudo npm run image"
command -v buildah >/dev/null 2>&1 || die "buildah is not installed (apt-get install -y buildah)"
command -v ldd >/dev/null 2>&1 || die "ldd is not installed (apt-get install -y libc-bin)"
command -v npm >/dev/null 2>&1 || die "npm is not installed"
dist=${IMAGE_DIST:-dist}
[ -f "$dist/src/main.js" ] || die "dist is not built: $dist/src/main.js is missing (run: npm run build)"
[ -f "$dist/src/cli/spegel.bundle.js" ] || die "dist has no bundle: $dist/src/cli/spegel.bundle.js is missing (run: npm run build, which ends with scripts/bundle.mjs)"
# Every module of src/ must be compiled (the browser code has its own tsconfig); a stale one is only a warning.
missing_js=() stale_js=()
while IFS= read -r ts; do
  js="$dist/${ts%.ts}.js"
  if [ ! -f "$js" ]; then missing_js+=("$js"); elif [ "$ts" -nt "$js" ]; then stale_js+=("$js"); fi
done < <(find src -name '*.ts' ! -name '*.test.ts' ! -name '*.d.ts')
[ "${#missing_js[@]}" -eq 0 ] || die "$dist is incomplete: ${missing_js[*]:0:3}${missing_js[3]+ ...} missing (run: npm run build)"
[ "${#stale_js[@]}" -eq 0 ] || note "warning: $dist is older than src for ${#stale_js[@]} file(s), e.g. ${stale_js[0]} (run: npm run build)"
newer_js=$(find "$dist/src" -name '*.js' ! -name '*.test.js' ! -name 'spegel.chunk-*' ! -path '*/web/ui/*' -newer "$dist/src/cli/spegel.bundle.js" -print -quit)
[ -z "$newer_js" ] || note "warning: $newer_js is newer than the bundle the image runs (run: npm run build)"
[ -d proto ] || die "proto/ is missing: the gRPC definitions must ship with the image"
[ -f package-lock.json ] || die "package-lock.json is missing: production dependencies are installed from it"
node_bin=node_modules/node/bin/node
[ -x "$node_bin" ] || die "$node_bin is missing: the image takes Node.js from the 'node' dev dependency (run: npm ci)"
arch=$(uname -m)
[ "$arch" = x86_64 ] || die "only x86_64 is supported (this machine is $arch): the loader and library paths are amd64's"

version=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' package.json | head -n 1)
[ -n "$version" ] || die "cannot read the version from package.json"
node_version=$("$node_bin" --version) || die "$node_bin does not run on this machine"
case "$node_version" in v24.*) ;; *) die "$node_bin is $node_version; the image needs Node.js 24" ;; esac
image_name=${IMAGE_NAME:-ghcr.io/spegel-ts/spegel-ts:$version}
out=${IMAGE_OUT:-dist/image/spegel-ts.oci.tar}
created=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
# `spegel version` prints SPEGEL_COMMIT; empty outside a git checkout.
commit=${SPEGEL_COMMIT:-$(git rev-parse HEAD 2>/dev/null || true)}

# --- private scratch space, removed on every exit ------------------------------------------------
work=$(mktemp -d "${IMAGE_TMPDIR:-${TMPDIR:-/tmp}}/spegel-image.XXXXXX")
storage=(--root "$work/storage/root" --runroot "$work/storage/run" --storage-driver vfs)
bah () { buildah "${storage[@]}" "$@"; }
containers=()
cleanup () {
  local c
  for c in "${containers[@]}"; do bah rm "$c" >/dev/null 2>&1 || true; done
  # vfs layers are plain directories; nothing is mounted, so removing the tree is enough.
  rm -rf "$work"
}
trap cleanup EXIT
started=$(date +%s)

# --- layer 1: runtime (Node.js, its libraries, the few files glibc and Node read) ----------------
# Node.js sits at /nodejs/bin/node as in the distroless image the Dockerfile uses, so the two
# images have the same entry point and a manifest's `command` works with either.
base=$work/base
mkdir -p "$base/nodejs/bin" "$base/usr/local/bin" "$base/etc" "$base/tmp" "$base/root" "$base/usr/bin"
chmod 1777 "$base/tmp"
chmod 0700 "$base/root"
if command -v strip >/dev/null 2>&1; then
  # The release binary keeps its symbol table (about 18 MB); the dynamic symbols that native
  # addons link against stay, so only backtraces in gdb lose names.
  strip --strip-all -o "$base/nodejs/bin/node" "$node_bin"
else
  note "warning: strip not found (apt-get install -y binutils): copying node unstripped (+18 MB)"
  cp "$node_bin" "$base/nodejs/bin/node"
fi
chmod 0755 "$base/nodejs/bin/node"
# `env` makes the `#!/usr/bin/env node` line of main.js work, so `spegel <command>` (for example
# `kubectl exec ... -- spegel doctor`) runs without naming node; it needs nothing but libc.
cp "$(command -v env)" "$base/usr/bin/env"

# Every library the two binaries load, at the path the loader looks for it, as a regular file
# (symlinks resolved). The loader is found at the path written in the ELF interpreter field.
copy_libs () {
  local bin=$1 line lib
  while IFS= read -r line; do
    line=${line#"${line%%[![:space:]]*}"}
    case "$line" in
      *'=> not found'*) die "$bin needs a library this machine lacks: $line" ;;
      *' => '/*) lib=${line#*=> }; lib=${lib%% (*} ;;
      /*) lib=${line%% (*} ;;
      *) continue ;;
    esac
    lib=$(echo "$lib" | tr -d '[:space:]')
    mkdir -p "$base$(dirname "$lib")"
    cp -L "$lib" "$base$lib"
  done < <(ldd "$bin")
}
copy_libs "$node_bin"
copy_libs "$(command -v env)"

cat > "$base/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
EOF
cat > "$base/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
# getaddrinfo reads /etc/hosts first, then DNS: the DNS bootstrapper's name is found in a
# headless Service's DNS records or, in tests, in a mounted /etc/hosts. glibc 2.34+ has the
# files and dns backends built in, so no libnss_*.so is needed.
cat > "$base/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
hosts: files dns
EOF
# `multi on` (Debian's default): a name listed on several /etc/hosts lines resolves to all of
# them, as a headless Service's DNS name does; glibc's built-in default returns the first only.
echo 'multi on' > "$base/etc/host.conf"
cat > "$base/etc/hosts" <<'EOF'
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
EOF
cat > "$base/etc/os-release" <<EOF
NAME="spegel-ts"
ID=spegel-ts
VERSION_ID="$version"
PRETTY_NAME="spegel-ts $version (Node.js $node_version, glibc and libraries from $(. /etc/os-release && echo "$PRETTY_NAME"))"
EOF
ln -s /app/dist/src/cli/spegel.bundle.js "$base/usr/local/bin/spegel"

# --- layer 2: production dependencies -------------------------------------------------------------
deps=$work/deps/app
mkdir -p "$deps"
cp package.json package-lock.json "$deps/"
# --ignore-scripts: no dependency needs an install script (no native addons); protobufjs's
# postinstall only prints a version warning. --prefer-offline uses npm's cache when it can.
(cd "$deps" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --prefer-offline --loglevel=error >/dev/null) \
  || die "npm ci --omit=dev failed (the npm registry or npm's cache must be reachable)"
rm -f "$deps/package.json" "$deps/package-lock.json" "$deps/node_modules/.package-lock.json"
for forbidden in typescript node playwright-core kubernetes-models; do
  [ ! -e "$deps/node_modules/$forbidden" ] || die "dev dependency $forbidden ended up in the production node_modules"
done
# Type declarations, TypeScript sources, source maps and docs are 60% of node_modules
# and nothing reads them at run time (licences stay).
find "$deps/node_modules" -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.ts' \
  -o -name '*.mts' -o -name '*.cts' -o -name '*.map' -o -name '*.md' -o -name '*.markdown' \) -delete
find "$deps/node_modules" -depth -type d -empty -delete

# --- layer 3: the application ----------------------------------------------------------------------
app=$work/app/app
mkdir -p "$app/dist"
cp package.json "$app/"
cp -r proto "$app/proto"
cp -r "$dist/src" "$app/dist/src"
find "$app/dist/src" -type f \( -name '*.test.js' -o -name '*.map' \) -delete
find "$app" -depth -type d -empty -delete
chmod 0755 "$app/dist/src/main.js" "$app/dist/src/cli/spegel.bundle.js"

# Everything is root-owned in the image, readable by all, writable by root only.
chown -R 0:0 "$work/base" "$work/deps" "$work/app"
chmod -R go-w "$work/base" "$work/deps" "$work/app"
chmod 1777 "$base/tmp"

# --- assemble: one layer per part, so a new release usually ships only the app layer ------------
# The runtime and dependency layers carry timestamp 0, so the same inputs give the same layer
# digests in every build and nodes that already hold them fetch only what changed.
c=$(bah from --quiet --name "spegel-ts-build-$$" scratch); containers+=("$c")
bah copy --quiet "$c" "$base/" / >/dev/null
bah config --os linux --arch amd64 "$c"
bah commit --quiet --timestamp 0 --omit-history --identity-label=false --rm "$c" localhost/spegel-ts-layers/runtime >/dev/null
containers=()

c=$(bah from --quiet --name "spegel-ts-build-$$" localhost/spegel-ts-layers/runtime); containers+=("$c")
bah copy --quiet "$c" "$work/deps/" / >/dev/null
bah commit --quiet --timestamp 0 --omit-history --identity-label=false --rm "$c" localhost/spegel-ts-layers/deps >/dev/null
containers=()

c=$(bah from --quiet --name "spegel-ts-build-$$" localhost/spegel-ts-layers/deps); containers+=("$c")
bah copy --quiet "$c" "$work/app/" / >/dev/null
bah config \
  --entrypoint '["/nodejs/bin/node","/app/dist/src/cli/spegel.bundle.js"]' \
  --cmd '[]' \
  --workingdir /app \
  --env PATH=/nodejs/bin:/usr/local/bin:/usr/bin:/bin \
  --env NODE_ENV=production \
  --env NODE_OPTIONS='--max-semi-space-size=1 --v8-pool-size=1' \
  --env MALLOC_ARENA_MAX=2 \
  --env MALLOC_MMAP_THRESHOLD_=131072 \
  --env MALLOC_TRIM_THRESHOLD_=131072 \
  --env SPEGEL_COMMIT="$commit" \
  --user 0:0 \
  --port 5000/tcp --port 5001/tcp --port 9090/tcp \
  --label org.opencontainers.image.title=spegel-ts \
  --label org.opencontainers.image.description="Spegel-compatible peer-to-peer OCI registry mirror for containerd nodes" \
  --label org.opencontainers.image.version="$version" \
  --label org.opencontainers.image.licenses=MIT \
  --label org.opencontainers.image.revision="$commit" \
  --label io.spegel-ts.node-version="$node_version" \
  "$c"
mkdir -p "$(dirname "$out")"
rm -f "$out.partial"
# Layers gzip-compressed (buildah's default is none): 3x smaller archive and registry pulls.
bah commit --quiet --format oci --disable-compression=false --timestamp "$created" --omit-history --identity-label=false --rm \
  "$c" "oci-archive:$out.partial:$image_name" >/dev/null
containers=()
mv -f "$out.partial" "$out"

size_mb=$(du -m "$out" | cut -f1)
note "wrote $out ($image_name, ${size_mb} MB, $(( $(date +%s) - started )) s); run with: ctr images import $out"
