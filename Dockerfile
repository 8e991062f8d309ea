# syntax=docker/dockerfile:1
# spegel-ts for machines with a docker engine (or BuildKit) and access to base images:
#   docker build -t ghcr.io/spegel-ts/spegel-ts:$(node -p 'require("./package.json").version') .
# Without a docker engine or registry access, `npm run image` builds the same layout FROM
# scratch with buildah (scripts/build-image.sh); docs/image.md compares the two.
#
# The image runs as root: containerd's socket is root:root 0660, the content store's blobs are
# 0444 files in 0700 root directories, and `configuration`/`cleanup` write into
# /etc/containerd/certs.d (docs/image.md).

ARG NODE_BUILD_IMAGE=node:24-bookworm-slim
# The root variant (`:latest`); `:nonroot` could not open containerd's socket.
ARG NODE_RUNTIME_IMAGE=gcr.io/distroless/nodejs24-debian12

# --- build: compile TypeScript with the dev dependencies ---------------------------------------
FROM ${NODE_BUILD_IMAGE} AS build
WORKDIR /src
# A C compiler for the heap trimmer's glibc addon (src/native/malloc-trim.c, built by npm run build).
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.web.json ./
COPY proto ./proto
COPY src ./src
COPY scripts/bundle.mjs scripts/build-native.mjs ./scripts/
RUN npm run build \
 && find dist/src -type f \( -name '*.test.js' -o -name '*.map' \) -delete
# Files the runtime image lacks: `env` so the `#!/usr/bin/env node` line of main.js works
# (`kubectl exec ... -- spegel doctor`), a `spegel` command, and `multi on` so a name on several
# /etc/hosts lines resolves to all of them (glibc's built-in default returns the first only).
RUN mkdir -p /overlay/usr/bin /overlay/usr/local/bin /overlay/etc \
 && cp /usr/bin/env /overlay/usr/bin/env \
 && ln -s /app/dist/src/cli/spegel.bundle.js /overlay/usr/local/bin/spegel \
 && echo 'multi on' > /overlay/etc/host.conf

# --- deps: production dependencies only, from the lock file --------------------------------------
FROM ${NODE_BUILD_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# No dependency needs an install script (no native addons). Declarations, TypeScript sources,
# source maps and docs are two thirds of node_modules and nothing reads them at run time.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && rm -f node_modules/.package-lock.json \
 && find node_modules -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.ts' \
      -o -name '*.mts' -o -name '*.cts' -o -name '*.map' -o -name '*.md' -o -name '*.markdown' \) -delete \
 && find node_modules -depth -type d -empty -delete

# --- runtime ---------------------------------------------------------------------------------------
FROM ${NODE_RUNTIME_IMAGE}
ARG SPEGEL_COMMIT=""
COPY --from=build /overlay/ /
WORKDIR /app
# Least often changed first, so a new release usually ships only the last layers.
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY proto ./proto
COPY --from=build /src/dist/src ./dist/src
# NODE_OPTIONS: a 1 MiB young generation instead of V8's up to 32 MiB per semi-space, which an idle
# node otherwise keeps resident after start-up (about 55 MiB of RSS), and one V8 helper thread
# instead of four; MALLOC_ARENA_MAX: two malloc arenas instead of one per thread that ever
# allocated; the two thresholds: allocations of 128 KiB or more get their own mapping, returned
# whole when freed, instead of glibc raising its threshold as it goes and leaving them in a heap
# that only shrinks from the top. docs/image.md has the figures.
ENV NODE_ENV=production \
    NODE_OPTIONS="--max-semi-space-size=1 --v8-pool-size=1" \
    MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=131072 \
    MALLOC_TRIM_THRESHOLD_=131072 \
    PATH=/nodejs/bin:/usr/local/bin:/usr/bin:/bin \
    SPEGEL_COMMIT=${SPEGEL_COMMIT}
USER 0:0
EXPOSE 5000/tcp 5001/tcp 9090/tcp
# The bundle of dist/src (scripts/bundle.mjs): about 11 MiB less per node than loading the modules.
ENTRYPOINT ["/nodejs/bin/node", "/app/dist/src/cli/spegel.bundle.js"]
