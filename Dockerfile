# syntax=docker/dockerfile:1
#
# One image for every role of ipa (ipa stage, ipa router, ipa controller, ipa
# local): the binary, ONNX Runtime and the built-in model repository at
# /models. The build stage runs what a developer runs, `make models`: native
# dependencies and raw models into .deps/ (scripts/deps.sh), bin/ipa, then the
# model repository in .deps/models. There is no Docker engine on the
# development machines: dockerfile_test.go checks this file against the
# Makefile, scripts/deps.sh, go.mod and the environment the binary reads.
#
#   make docker                       # docker build -t ipa:$(VERSION) .
#   docker run -p 8080:8080 ipa       # ipa local: the OCR pipeline on port 8080
#   ipa manifests --image ipa:TAG --profile FILE | kubectl apply -f -
#
# Keep .deps/ and bin/ out of the build context (.dockerignore): both are
# built here, and a host's .deps/ is large.

FROM golang:1.26-bookworm AS build
# What scripts/deps.sh needs besides Go: cmake, ninja and pkg-config (HiGHS
# is compiled from source), npm (ONNX Runtime and the npm models), xz (the
# HiGHS source tarball), curl.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake ninja-build pkg-config npm xz-utils curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# make deps needs only the Makefile and the script: this layer (about five
# minutes, mostly HiGHS) is reused while the Go code changes.
COPY Makefile ./
COPY scripts/deps.sh scripts/
RUN make deps
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# make models = deps (a second when done) + bin/ipa (cgo; HiGHS, libstdc++
# and zlib linked in) + the model repository, self-checked with ONNX Runtime.
ARG VERSION=dev
RUN make models VERSION=${VERSION}

# The runtime needs glibc, and libstdc++/libgcc for libonnxruntime.so.1; the
# slim image has them (apt depends on them).
FROM debian:bookworm-slim AS runtime
COPY --from=build /src/.deps/lib/libonnxruntime.so.1 /usr/local/lib/libonnxruntime.so.1
COPY --from=build /src/.deps/models /models
COPY --from=build /src/bin/ipa /usr/local/bin/ipa
ENV IPA_MODELS_DIR=/models \
    IPA_ORT_LIB=/usr/local/lib/libonnxruntime.so.1
# Not root; the same uid as the Kubernetes manifests' runAsUser.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ipa"]
CMD ["local", "--pipeline", "ocr", "--http.listen-addr", "0.0.0.0:8080"]
