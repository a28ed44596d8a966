// Package profiles holds measured performance profiles of model variants: for
// every stage, variant, cores per replica and batch size, the latency of one
// batch (p50 and p99) and the saturation throughput of one replica. The
// optimizer turns them into its per-(stage, variant, cores, batch) parameters
// (IPA.md §2.1).
//
// It owns the profile file format, its validation, lookups, and the estimate
// of a batch size that was not measured; and the memory model (Memory, in
// memory.go): the measured resident memory of each variant's sessions,
// from which a stage process's memory is estimated. It is pure: no I/O happens beyond
// the io.Reader given to Load, and no clock is read. It may import models and
// nothing else of ipa (no runtime, dataplane or solver).
//
// # File format (version 1)
//
// A profile file is one JSON document; unknown fields are rejected. All times
// are in seconds and all rates in items (requests) per second:
//
//	{
//	  "version": 1,
//	  "measured": {                        // where and how: free-form except repetitions
//	    "host": "node-1", "cpu": "Intel Xeon Gold 6126 @ 2.60GHz",
//	    "os_arch": "linux/amd64", "runtime": "onnxruntime 1.22.0",
//	    "tool": "ipa profile v0.3.0", "at": "2025-01-31T12:00:00Z",
//	    "warmup_seconds": 2, "duration_seconds": 10, "repetitions": 3,
//	    "notes": "closed loop, threads = cores"
//	  },
//	  "stages": [{
//	    "name": "classify",                // a stage of the model repository
//	    "variants": [{
//	      "name": "resnet18",
//	      "load_seconds": 0.4,             // opening one session (optional; ipa profile --load-only)
//	      "configs": [{
//	        "cores": 1,                    // intra-op threads of one replica
//	        "points": [{
//	          "batch": 1,
//	          "latency_p50_seconds": 0.031,  // time to run one batch
//	          "latency_p99_seconds": 0.037,
//	          "throughput_per_second": 32.1, // items/s of one replica at saturation
//	          "samples": 300                 // batches timed (optional)
//	        }]
//	      }]
//	    }]
//	  }]
//	}
//
// Latency is the in-engine time of one batch of that size (IPA's
// model_latencies, which exclude the batcher's wait). Throughput is measured
// closed loop, so it is the replica's capacity, not the offered load (IPA's
// profiles were capped at the profiling load, IPA.md §6 item 6).
//
// load_seconds is how long opening one session of the variant took (one
// thread): what a new replica running it needs before it serves. Files
// written before it existed lack it; Profile.LoadTime then estimates it
// from the memory model and says so.
//
// Names follow models.ValidName. Within a file, stage, variant, cores and
// batch values are unique at their level; p99 >= p50 > 0 and throughput > 0.
// Points are kept sorted by batch, configs by cores.
//
// # Estimated points
//
// Lookup answers a batch size that was not measured, inside the measured
// range, with a least-squares quadratic in the batch size fitted to all
// measured points of that (stage, variant, cores), as IPA's regression branch
// did (IPA.md §2.1 item 3: PolynomialFeatures(2), a linear fit where the
// quadratic goes non-positive). Both latencies and the time per batch at
// saturation (batch/throughput) are fitted; the answer has Estimated set.
// Batch sizes outside the measured range are refused: extrapolating a
// quadratic is how a profile lies.
package profiles
