package client

import (
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// TestFromCursor: a resubscription of a resume request carries the latest
// cursor in its cursor variable, other variables kept, the caller's request
// left as it was; without resume the request is sent again unchanged.
func TestFromCursor(t *testing.T) {
	vars, _ := structpb.NewStruct(map[string]any{"after": 1, "room": "a"})
	req := &bridgev1.SubscribeRequest{Upstream: "u", Query: "subscription($after: Int) { events(after: $after) { id } }",
		Variables: vars, Resume: &bridgev1.Resume{CursorVariable: "after", CursorPointer: "/data/events/id"}}
	got, err := fromCursor(req, []byte(`42`))
	if err != nil {
		t.Fatal(err)
	}
	if v := got.GetVariables().AsMap(); v["after"] != 42.0 || v["room"] != "a" {
		t.Fatalf("variables %v, want after 42 and room a", v)
	}
	if v := req.GetVariables().AsMap(); v["after"] != 1.0 {
		t.Fatalf("the caller's request changed: %v", v)
	}
	if got, err := fromCursor(req, []byte(`{"ts":"2026-12-02","id":"x"}`)); err != nil || got.GetVariables().GetFields()["after"].GetStructValue().GetFields()["id"].GetStringValue() != "x" {
		t.Fatalf("object cursor: %v %v", got, err)
	}
	if _, err := fromCursor(req, []byte(`{not json`)); err == nil {
		t.Fatal("a cursor that is not JSON was accepted")
	}
	plain := &bridgev1.SubscribeRequest{Upstream: "u", Query: "subscription { ticker { n } }"}
	if got, err := fromCursor(plain, []byte(`7`)); err != nil || got != plain {
		t.Fatalf("without resume: %v %v", got, err)
	}
}
