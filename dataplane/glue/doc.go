// Package glue holds the pure functions that connect the stages of image
// pipelines: decoding request images, turning images into model input
// tensors, and turning model outputs into boxes, crops, classes and text.
//
//   - Images: DecodeImage (PNG/JPEG from raw request bytes, with size limits;
//     a truncated image is an error whatever its format, baseline or
//     progressive JPEG or PNG; CMYK and YCCK JPEGs are converted to RGB in
//     linear light), DecodeImageData (the same, or base64 of it), Crop, Stack.
//   - Declarative preprocessing (a pipeline spec's image sections): NewPrep
//     resolves a models.ImagePrep against a model input, Preprocess resizes
//     (stretch, letterbox, centre-crop, shorter side), lays out (NCHW, NHWC;
//     RGB, BGR, GRAY), normalises and records the Geometry that maps boxes
//     back to the image. Detector outputs: DecodeBoxes (xyxy, yxyx, xywh,
//     cxcywh; pixels or normalised), SelectBoxes (threshold, NMS, max),
//     Softmax.
//   - ImageNet classifiers: ImageNetPrep, ClassifyInput (Preprocess with
//     ImageNetPrep), TopK.
//   - OCR (PP-OCRv4 det → rec): DetInput, DetBoxes, GroupLines, RecInput,
//     CTCDecode, LoadKeys, LoadKeysFile. Package ocrset generates labelled pages
//     to measure them (character error rate).
//   - Faces (MediaPipe BlazeFace): FacePrep, FaceInput, FaceAnchors,
//     FaceBoxes, FaceInputBoxes (the router's "blazeface" decoder).
//   - Audio (Silero VAD → openWakeWord melspectrogram → embedding → head):
//     DecodeWAV (16 kHz mono PCM16 only; no resampling), VADChunks,
//     MelRows, EmbedWindows (x/10+2, 76-frame windows), HeadWindows,
//     HeadSpan, MaxOver.
//
// Nothing here opens a model session or does I/O beyond its arguments; the
// router and `ipa local` call these functions between stage calls. Every
// constant names its source (PaddleOCR, MediaPipe or the torchvision ImageNet
// convention).
//
// Pixels are read as 8-bit sRGB; transparent pixels are composited over white
// (text PNGs are often black on transparent). All resampling uses
// golang.org/x/image/draw.
//
// Functions building inputs panic only on programmer errors (a non-positive
// size); functions reading model outputs return an error when a tensor does
// not have the shape or type the model is documented to produce, because the
// model behind a stage is configuration, not code.
package glue
