// Package enginetest helps tests that watch the control requests an engine
// server is sent.
package enginetest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
)

// ReloadDir is the weights directory a reload request names (vLLM's
// collective_rpc reload_weights: kwargs.weights_path; SGLang's
// update_weights_from_disk: model_path), and whether r is one. r's body is
// read and put back, so the request can still be served; a body that is
// not JSON names "".
func ReloadDir(r *http.Request) (string, bool) {
	if r.URL.Path != "/collective_rpc" && r.URL.Path != "/update_weights_from_disk" {
		return "", false
	}
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	var req struct {
		ModelPath string `json:"model_path"`
		Kwargs    struct {
			WeightsPath string `json:"weights_path"`
		} `json:"kwargs"`
	}
	_ = json.Unmarshal(body, &req)
	return req.ModelPath + req.Kwargs.WeightsPath, true
}
