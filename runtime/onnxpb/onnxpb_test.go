package onnxpb

import (
	"testing"

	"google.golang.org/protobuf/proto"
)

func TestModelRoundTrip(t *testing.T) {
	m := &ModelProto{
		IrVersion:   proto.Int64(int64(Version_IR_VERSION)),
		OpsetImport: []*OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(21)}},
		Graph: &GraphProto{
			Name: proto.String("g"),
			Node: []*NodeProto{{OpType: proto.String("Relu"), Input: []string{"x"}, Output: []string{"y"}}},
			Initializer: []*TensorProto{{
				Name: proto.String("s"), DataType: proto.Int32(int32(TensorProto_INT64)), Dims: []int64{2}, Int64Data: []int64{0, 10},
			}},
		},
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var got ModelProto
	if err := proto.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(m, &got) {
		t.Fatalf("round trip changed the model:\n%v\n%v", m, &got)
	}
	if Version_IR_VERSION != 10 {
		t.Errorf("IR_VERSION %d; onnx.proto of ONNX 1.17 has 10", Version_IR_VERSION)
	}
}
