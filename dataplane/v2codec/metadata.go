package v2codec

import "github.com/ipa-serving/ipa/models"

// TensorMetadata is one entry of a V2 model metadata response's "inputs" or
// "outputs"; -1 in Shape marks a dynamic dimension.
type TensorMetadata struct {
	Name     string  `json:"name"`
	DataType string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

// TensorMetadataOf returns the metadata entries of specs.
func TensorMetadataOf(specs []models.TensorSpec) []TensorMetadata {
	out := make([]TensorMetadata, len(specs))
	for i, s := range specs {
		out[i] = TensorMetadata{s.Name, s.DataType.String(), s.Shape}
	}
	return out
}
