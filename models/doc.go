// Package models holds the nouns every role of ipa shares: tensor specs, model
// variants and their metadata, stages, and per-stage configurations.
//
// It is pure data plus the reader of the on-disk model repository (through
// fs.FS, so tests can hand it an in-memory tree). It must not import any other
// package of ipa, nor any third-party module.
package models
