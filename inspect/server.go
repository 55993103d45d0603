package inspect

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/exgrpo/exgrpo/policy"
	"go.uber.org/zap"
)

//go:embed web
var webFS embed.FS

// ServeConfig configures the web page.
type ServeConfig struct {
	// Addr is the listen address; default "127.0.0.1:8080" (":0" picks a port).
	Addr string
	// Checkpoint, optional, scores a question's stored trajectories
	// (entropy under that policy); CheckpointName is shown with the figures.
	Checkpoint     *policy.Checkpoint
	CheckpointName string
	// Refresh: a request reads what the streams gained when the last read is
	// older than this; default 2s.
	Refresh time.Duration
	// Out receives the "serving on" line; Ready, if set, is called with the
	// page's URL once it listens.
	Out   io.Writer
	Ready func(url string)
}

// TimelineView is the whole run in one response: the points of the bucket
// histogram over time and of the reward and entropy curves.
type TimelineView struct {
	Run        string  `json:"run"`
	Where      string  `json:"where"`
	K          int     `json:"k"`
	LastStep   int64   `json:"last_step"`
	Points     []Point `json:"points"`
	Checkpoint string  `json:"checkpoint,omitempty"`
}

// handler serves the page and its JSON API over one ledger.
type handler struct {
	src  *Source
	cfg  ServeConfig
	log  *zap.Logger
	mu   sync.Mutex
	l    *Ledger
	read time.Time
}

// NewHandler returns the web page's handler: GET only, nothing it serves
// writes to the streams.
func NewHandler(src *Source, cfg ServeConfig, log *zap.Logger) http.Handler {
	if cfg.Refresh <= 0 {
		cfg.Refresh = 2 * time.Second
	}
	if log == nil {
		log = zap.NewNop()
	}
	h := &handler{src: src, cfg: cfg, log: log, l: NewLedger(src.K)}
	h.l.Rules = src.Rules
	mux := http.NewServeMux()
	static, _ := fs.Sub(webFS, "web")
	mux.Handle("GET /", http.FileServerFS(static))
	mux.HandleFunc("GET /api/timeline", h.api(func(r *http.Request) (any, error) {
		pts := h.l.Points
		if pts == nil {
			pts = []Point{}
		}
		return TimelineView{Run: src.Names.Run, Where: src.Where, K: h.l.K, LastStep: h.l.LastStep(), Points: pts,
			Checkpoint: cfg.CheckpointName}, nil
	}))
	mux.HandleFunc("GET /api/buckets", h.api(func(r *http.Request) (any, error) {
		at := int64(-1)
		if s := r.URL.Query().Get("at"); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%w: at=%q is not a step", ErrUsage, s)
			}
			at = n
		}
		return h.l.Buckets(src.Names.Run, at), nil
	}))
	mux.HandleFunc("GET /api/step/{n}", h.api(func(r *http.Request) (any, error) {
		n, err := strconv.ParseInt(r.PathValue("n"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: %q is not a step", ErrUsage, r.PathValue("n"))
		}
		return h.l.Step(src.Names.Run, n)
	}))
	mux.HandleFunc("GET /api/question", h.api(func(r *http.Request) (any, error) {
		return h.l.Question(r.Context(), src, r.URL.Query().Get("id"), cfg.Checkpoint, cfg.CheckpointName)
	}))
	mux.HandleFunc("GET /api/trajectory", h.api(func(r *http.Request) (any, error) {
		return h.l.Trajectory(r.URL.Query().Get("id"))
	}))
	mux.HandleFunc("GET /api/versions", h.api(func(r *http.Request) (any, error) {
		return src.Versions(r.Context())
	}))
	mux.HandleFunc("GET /api/streams", h.api(func(r *http.Request) (any, error) {
		return src.Streams(r.Context(), 20)
	}))
	return mux
}

// api wraps a view: refresh the ledger when due, build the view under the
// lock, answer JSON (404 for ErrNotFound, 400 for ErrUsage).
func (h *handler) api(view func(*http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		var err error
		if time.Since(h.read) >= h.cfg.Refresh {
			ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
			err = h.l.Update(ctx, h.src)
			cancel()
			if err == nil {
				h.read = time.Now()
			}
		}
		var v any
		if err == nil {
			v, err = view(r)
		}
		h.mu.Unlock()
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if err != nil {
			code := http.StatusInternalServerError
			switch {
			case errors.Is(err, ErrNotFound):
				code = http.StatusNotFound
			case errors.Is(err, ErrUsage):
				code = http.StatusBadRequest
			default:
				h.log.Warn("inspect view", zap.String("path", r.URL.Path), zap.Error(err))
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			_ = WriteJSON(w, map[string]string{"error": err.Error()})
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = WriteJSON(w, v)
	}
}

// Serve serves the web page until ctx ends (then it returns nil).
func Serve(ctx context.Context, src *Source, cfg ServeConfig, log *zap.Logger) error {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8080"
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("inspect: listen %s: %w", cfg.Addr, err)
	}
	srv := &http.Server{Handler: NewHandler(src, cfg, log), ReadHeaderTimeout: 10 * time.Second}
	url := "http://" + ln.Addr().String() + "/"
	if cfg.Out != nil {
		fmt.Fprintf(cfg.Out, "inspect: run %s (%s) on %s  (Ctrl-C stops)\n", src.Names.Run, src.Where, url)
	}
	if cfg.Ready != nil {
		cfg.Ready(url)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-done
		return nil
	case err := <-done:
		return fmt.Errorf("inspect: serve: %w", err)
	}
}
