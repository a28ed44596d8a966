// Package onnxpb holds the Go types of the ONNX protobuf schema (ModelProto,
// GraphProto, NodeProto, TensorProto, …), generated from onnx.proto of ONNX
// 1.17 (IR version 10, proto2) as shipped by Debian trixie's libonnx-dev
// 1.17.0-3+b1 (usr/include/onnx/onnx.proto, Apache-2.0, unmodified).
//
// Models are read and written with google.golang.org/protobuf/proto:
//
//	m := new(onnxpb.ModelProto)
//	err := proto.Unmarshal(b, m)
//
// The generated file is committed, so building ipa needs neither protoc nor
// apt. It depends only on google.golang.org/protobuf. The package must not
// import anything else of ipa.
//
// # Regenerating
//
// From the committed onnx.proto, with protoc 3.21.12 (Debian bookworm
// protobuf-compiler) and protoc-gen-go v1.36.12 on PATH:
//
//	go generate ./runtime/onnxpb
//
// which runs, in this directory,
//
//	protoc --go_out=. --go_opt=paths=source_relative \
//	  --go_opt=Monnx.proto=github.com/ipa-serving/ipa/runtime/onnxpb onnx.proto
//
// regen.sh does the whole job on a fresh Debian machine: it installs
// protobuf-compiler (apt) and protoc-gen-go (go install) when missing, and with
// --fetch first replaces onnx.proto by the one in trixie's libonnx-dev, fetched
// through a private apt configuration that leaves the system's sources alone:
//
//	runtime/onnxpb/regen.sh --fetch
package onnxpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go_opt=Monnx.proto=github.com/ipa-serving/ipa/runtime/onnxpb onnx.proto
