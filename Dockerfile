# Multi-stage image for every role of ipa (no Docker engine on the development
# machines: this file is kept true by reading, not by CI).
#
#   docker build -t ipa .
#   docker run -p 8080:8080 ipa stage --stage classify --http.listen-addr 0.0.0.0:8080
FROM golang:1.26-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake ninja-build pkg-config npm xz-utils \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# make models = deps (ONNX Runtime, HiGHS, raw models) + build + model repository.
RUN make models

# The runtime needs glibc and libonnxruntime.so.1 only; HiGHS is linked in.
FROM debian:bookworm-slim
COPY --from=build /src/.deps/lib/libonnxruntime.so.1 /usr/local/lib/
COPY --from=build /src/.deps/models /models
COPY --from=build /src/bin/ipa /usr/local/bin/ipa
ENV IPA_MODELS_DIR=/models IPA_ORT_LIB=/usr/local/lib/libonnxruntime.so.1
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ipa"]
CMD ["stage", "--stage", "classify", "--http.listen-addr", "0.0.0.0:8080"]
