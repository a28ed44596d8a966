// Package v2codec encodes and decodes the Open Inference Protocol (KServe V2)
// REST request and response bodies, including the binary tensor data extension (Triton's
// binary_tensor_data, which KServe adopted unchanged).
//
// Wire layout with the binary extension:
//
//	body = JSON header (Inference-Header-Content-Length bytes) ++ tensor 0 bytes ++ tensor 1 bytes ++ …
//
// where each tensor sent in binary has parameters.binary_data_size in its JSON
// entry and its bytes follow in the order of the entries. Tensor bytes are the
// same in memory and on the wire: little-endian, row-major, and for BYTES each
// element is a 4-byte little-endian length followed by that many bytes.
//
// Behaviours the specification leaves open, decided here:
//
//   - NaN and ±Inf are not JSON numbers. Encoders write them as the JSON
//     strings "NaN", "Infinity" and "-Infinity" (the proto3 JSON mapping);
//     decoders accept those strings, any spelling strconv.ParseFloat reads as
//     non-finite ("inf", "nan", …), and the bare tokens NaN/inf that fastjson
//     lets through, for FP16, FP32 and FP64. NaN payloads survive only in
//     binary form.
//   - A JSON number that overflows the datatype (1e39 for FP32, 65520 for
//     FP16, 300 for UINT8) is an error, not ±Inf or a wrapped value.
//     Underflow rounds to a subnormal or zero, as IEEE 754 does.
//   - Integers must be integral (2, 2.0 and 2e0 are all 2; 2.5 is an error).
//   - BYTES elements with invalid UTF-8 are sent in JSON with each bad byte
//     replaced by U+FFFD, as encoding/json does; ask for binary output to get
//     the bytes exactly.
//   - parameters.timeout is a Go duration string ("250ms") or a number of
//     seconds (note: Triton's "timeout" counts microseconds; ours does not).
//     parameters.deadline is an RFC 3339 string (fractional seconds allowed)
//     or an integer of Unix nanoseconds.
//   - Decoded tensor bytes are bounded by the body: at most 4 bytes per byte
//     of JSON header plus the binary part, so a small body cannot make the
//     decoder allocate much.
//
// It is a leaf: it knows tensors (models.Tensor), not servers. Files by job:
// types.go (requests, responses), decode.go, encode.go, number.go (the
// float fast path), fp16.go (half precision and exact rounding),
// deadline.go (the deadline headers and parameters), metadata.go.
package v2codec
