package dataplane

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/valyala/fasthttp"
)

// The model repository extension (Triton's REST form of the Open
// Inference Protocol's RepositoryIndex, RepositoryModelLoad and
// RepositoryModelUnload):
//
//	POST /v2/repository/index                 {"ready": true} lists only READY entries
//	POST /v2/repository/models/{model}/load   200 {} when the model is served (it is loaded from start)
//	POST /v2/repository/models/{model}/unload 400: ipa does not unload a model while it runs
//
// ipa loads every model it serves at start and keeps it until exit (a
// stage's variants switch live through the admin API), which is Triton's
// "none" model-control mode; load and unload are answered accordingly.

// ServeRepository answers a request under /v2/repository/; index lists the
// entries and served reports whether a model name is served.
func ServeRepository(ctx *fasthttp.RequestCtx, index func() []IndexEntry, served func(string) bool) {
	path := string(ctx.Path())
	if m := string(ctx.Method()); m != fasthttp.MethodPost && !(m == fasthttp.MethodGet && path == "/v2/repository/index") {
		WriteError(ctx, fasthttp.StatusMethodNotAllowed, fmt.Sprintf("%s %s: the repository extension takes POST", m, path))
		return
	}
	if path == "/v2/repository/index" {
		var req struct {
			RepositoryName string `json:"repository_name"`
			Ready          bool   `json:"ready"`
		}
		if body := ctx.PostBody(); len(bytes.TrimSpace(body)) > 0 {
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&req); err != nil || dec.More() {
				WriteError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("repository index request: want {\"repository_name\": \"\", \"ready\": false}, or no body (%v)", err))
				return
			}
		}
		list := index()
		if req.Ready {
			list = slices.DeleteFunc(list, func(e IndexEntry) bool { return e.State != StateReady })
		}
		WriteJSON(ctx, fasthttp.StatusOK, list)
		return
	}
	rest, ok := strings.CutPrefix(path, "/v2/repository/models/")
	name, action, _ := strings.Cut(rest, "/")
	switch {
	case !ok || name == "" || (action != "load" && action != "unload"):
		WriteError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("no route for %s; the repository extension has POST /v2/repository/index and /v2/repository/models/{model}/load and /unload", path))
	case !served(name):
		WriteError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("unknown model %q: ipa serves the models it started with (POST /v2/repository/index lists them)", name))
	case action == "load":
		WriteJSON(ctx, fasthttp.StatusOK, map[string]any{}) // loaded since start
	default:
		WriteError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("model %q cannot be unloaded: ipa keeps the models it serves loaded until it exits (switch a stage's variant with POST /admin/stages/{stage}; stop the process to free its memory)", name))
	}
}

// Index entry states (Triton's).
const (
	StateReady       = "READY"
	StateLoading     = "LOADING"
	StateUnavailable = "UNAVAILABLE"
)
