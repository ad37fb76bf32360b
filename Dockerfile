# syntax=docker/dockerfile:1.7
#
# The Spillway operator image: the compiled operator on Node 24, the Pulumi CLI and the
# provider plugins its infra/ programs need, running as uid 65532 on a read-only root
# filesystem. Build from the repository root (docs/install.md, "Build the image"):
#
#   docker build -t ghcr.io/spillway-dev/spillway:0.1.0 .
#
# Version pins are checked by test/chart/dockerfile.test.ts: Node is package.json's "node"
# devDependency, the Pulumi CLI and plugins are package.json's @pulumi/* versions.

ARG NODE_IMAGE=node:24.21.0-bookworm-slim

# ---- 1. Compile the TypeScript operator (needs the dev dependencies: typescript) ----------
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY bin ./bin
COPY operator ./operator
COPY infra ./infra
RUN npm run build

# ---- 2. Production dependencies only; no install scripts run -----------------------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# ---- 3. Pulumi CLI and provider plugins (downloaded over TLS from Pulumi's releases) -------
FROM ${NODE_IMAGE} AS pulumi
ARG PULUMI_VERSION=3.270.0
ARG PULUMI_AZURE_NATIVE_VERSION=3.28.0
ARG PULUMI_OCI_VERSION=4.20.0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
# The plugins go next to the CLI on PATH: Pulumi uses plugins found on PATH ("ambient"), so
# PULUMI_HOME can stay a writable volume (the chart puts it in the state dir) while the
# binaries stay in the read-only image.
RUN case "$(dpkg --print-architecture)" in \
      amd64) cli=x64; plugin=amd64 ;; \
      arm64) cli=arm64; plugin=arm64 ;; \
      *) echo "unsupported architecture" >&2; exit 1 ;; \
    esac \
 && mkdir -p /opt/pulumi/bin \
 && curl -fsSL "https://get.pulumi.com/releases/sdk/pulumi-v${PULUMI_VERSION}-linux-${cli}.tar.gz" \
    | tar -xz -C /opt/pulumi/bin --strip-components=1 \
 && for p in "azure-native:${PULUMI_AZURE_NATIVE_VERSION}" "oci:${PULUMI_OCI_VERSION}"; do \
      name="${p%%:*}"; version="${p#*:}"; \
      curl -fsSL "https://github.com/pulumi/pulumi-${name}/releases/download/v${version}/pulumi-resource-${name}-v${version}-linux-${plugin}.tar.gz" \
        | tar -xz -C /opt/pulumi/bin "pulumi-resource-${name}"; \
    done \
 && /opt/pulumi/bin/pulumi version

# ---- 4. Runtime ---------------------------------------------------------------------------
FROM ${NODE_IMAGE}
LABEL org.opencontainers.image.title="spillway" \
      org.opencontainers.image.description="Spillway operator: AI training across clouds under a right of first refusal" \
      org.opencontainers.image.source="https://github.com/spillway-dev/spillway" \
      org.opencontainers.image.licenses="Apache-2.0"
# npm stays (Pulumi's Node.js language host may query it about the program's dependencies);
# yarn and corepack are never used. A named user for uid 65532, so tools that look the user
# up (os.userInfo, Go's user.Current) work.
RUN rm -rf /usr/local/lib/node_modules/corepack /usr/local/bin/corepack /opt/yarn-* \
      /usr/local/bin/yarn /usr/local/bin/yarnpkg \
 && groupadd --gid 65532 spillway \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin spillway
WORKDIR /app
# Everything under /app and /opt/pulumi belongs to root and is read-only for the operator;
# it writes only to /tmp and its Pulumi state dir (both volumes in the chart).
COPY --from=deps /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=pulumi /opt/pulumi /opt/pulumi
COPY package.json ./
COPY bin/spillway.mjs bin/sync-runtime.mjs ./bin/
COPY crds ./crds
# The Pulumi programs run from source: the provisioner finds infra/ above its module and
# points each stack's Pulumi.yaml at infra/<program>, loaded through tsx (a dependency).
COPY infra ./infra
RUN chmod 0755 /app/bin/spillway.mjs && ln -s /app/bin/spillway.mjs /usr/local/bin/spillway
ENV NODE_ENV=production \
    HOME=/tmp \
    PATH=/opt/pulumi/bin:$PATH \
    PULUMI_HOME=/tmp/.pulumi \
    PULUMI_SKIP_UPDATE_CHECK=true \
    PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
USER 65532:65532
# Metrics and health probes (the chart's defaults).
EXPOSE 8080 8081
ENTRYPOINT ["spillway"]
CMD ["operator"]
