package main

import (
	"fmt"
	"net/http"
	"testing"
)

// The root paths honour If-Match and If-None-Match as /v1 does: a PUT or
// DELETE whose condition does not hold answers 412 and changes nothing.
// (They used to be ignored, so a compare-and-swap sent to a root path was
// applied unconditionally.)
func TestRootConditionalWrites(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	base := c.members[0].srv.URL

	expect(t, do(t, http.MethodPut, base+"/cas", "x", "If-Match", "*"), http.StatusPreconditionFailed, "If-Match * on absent")
	expect(t, do(t, http.MethodPut, base+"/cas", "one", "If-None-Match", "*"), http.StatusNoContent, "If-None-Match * on absent")
	rev := do(t, http.MethodGet, base+"/v1/kv/cas", "").rev()

	expect(t, do(t, http.MethodPut, base+"/cas", "two", "If-None-Match", "*"), http.StatusPreconditionFailed, "If-None-Match * on present")
	expect(t, do(t, http.MethodPut, base+"/cas", "two", "If-Match", fmt.Sprintf(`"%d"`, rev+1)), http.StatusPreconditionFailed, "If-Match wrong revision")
	expect(t, do(t, http.MethodDelete, base+"/cas", "", "If-Match", fmt.Sprintf(`"%d"`, rev+1)), http.StatusPreconditionFailed, "DELETE wrong revision")
	expect(t, do(t, http.MethodPut, base+"/cas", "x", "If-Match", `"abc"`), http.StatusBadRequest, "malformed If-Match")
	if r := do(t, http.MethodGet, base+"/cas", ""); r.code != http.StatusOK || string(r.body) != "one" {
		t.Fatalf("after refused conditions: %s, want 200 one", r)
	}

	expect(t, do(t, http.MethodPut, base+"/cas", "two", "If-Match", fmt.Sprintf(`"%d"`, rev)), http.StatusNoContent, "If-Match right revision")
	rev2 := do(t, http.MethodGet, base+"/v1/kv/cas", "").rev()
	expect(t, do(t, http.MethodDelete, base+"/cas", "", "If-Match", fmt.Sprintf(`"%d"`, rev2)), http.StatusNoContent, "DELETE right revision")
	expect(t, do(t, http.MethodGet, base+"/cas", ""), http.StatusNotFound, "after conditional delete")
}
