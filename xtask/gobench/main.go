// gobench: the load generator of `cargo xtask bench compare --client go`,
// built on etcd's own Go client (clientv3 3.4, from Debian's
// golang-etcd-server-dev), because that is what most etcd users run. It
// takes the flags of cairn-bench that compare uses and prints the same
// JSON report, so the two clients' figures sit in one table format.
//
// --clients goroutines each keep exactly one request in flight; they share
// --conns clientv3 clients round-robin. Each workload runs --warmup
// unmeasured requests, then --total measured ones (or for --duration).
// Latencies of successful requests are kept and sorted: exact
// nearest-rank percentiles. QPS counts successful requests only.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/clientv3"
)

// Distinct error messages kept per workload (the rest are only counted).
const maxErrorMessages = 5

type workloads []string

func (w *workloads) String() string { return strings.Join(*w, ",") }

// Set replaces the defaults on the first use, then appends, as
// cairn-bench's repeatable --workload does.
func (w *workloads) Set(v string) error {
	if !workloadsSet {
		*w = nil
		workloadsSet = true
	}
	for _, name := range strings.Split(v, ",") {
		switch name {
		case "put", "range-linearizable", "range-serializable", "txn", "mixed":
			*w = append(*w, name)
		default:
			return fmt.Errorf("unknown workload %q", name)
		}
	}
	return nil
}

var workloadsSet bool

type settings struct {
	Endpoints    []string `json:"endpoints"`
	Clients      int      `json:"clients"`
	Conns        int      `json:"conns"`
	Total        *uint64  `json:"total"`
	DurationSecs *float64 `json:"duration_secs"`
	Warmup       uint64   `json:"warmup"`
	KeySize      int      `json:"key_size"`
	ValSize      int      `json:"val_size"`
	KeySpace     uint64   `json:"key_space"`
}

type result struct {
	Workload    string  `json:"workload"`
	Requests    uint64  `json:"requests"`
	Errors      uint64  `json:"errors"`
	ElapsedSecs float64 `json:"elapsed_secs"`
	QPS         float64 `json:"qps"`
	MeanMs      float64 `json:"mean_ms"`
	P50Ms       float64 `json:"p50_ms"`
	P90Ms       float64 `json:"p90_ms"`
	P99Ms       float64 `json:"p99_ms"`
	P999Ms      float64 `json:"p999_ms"`
	MaxMs       float64 `json:"max_ms"`
	// With --cpu-of: those processes' CPU time during the measured phase,
	// per completed request (µs).
	MembersCPUUsPerRequest *float64 `json:"members_cpu_us_per_request,omitempty"`
	ErrorMessages          []string `json:"error_messages,omitempty"`
}

type report struct {
	Settings settings `json:"settings"`
	Results  []result `json:"results"`
}

type tally struct {
	requests, errors uint64
	latenciesUs      []uint32
	messages         map[string]bool
}

func (t *tally) fail(err error) {
	t.errors++
	if len(t.messages) < maxErrorMessages {
		t.messages[err.Error()] = true
	}
}

func (t *tally) merge(o *tally) {
	t.requests += o.requests
	t.errors += o.errors
	t.latenciesUs = append(t.latenciesUs, o.latenciesUs...)
	for m := range o.messages {
		if len(t.messages) < maxErrorMessages {
			t.messages[m] = true
		}
	}
}

type bench struct {
	kvs      []*clientv3.Client
	clients  int
	keySize  int
	keySpace uint64
	value    string
	timeout  time.Duration
}

func (b *bench) key(rng *rand.Rand) string {
	return fmt.Sprintf("%0*d", b.keySize, uint64(rng.Int63n(int64(b.keySpace))))
}

func (b *bench) request(ctx context.Context, c *clientv3.Client, workload, key string, rng *rand.Rand) error {
	var err error
	switch workload {
	case "put":
		_, err = c.Put(ctx, key, b.value)
	case "range-linearizable":
		_, err = c.Get(ctx, key)
	case "range-serializable":
		_, err = c.Get(ctx, key, clientv3.WithSerializable())
	case "txn":
		// Both branches write, so every txn goes through consensus; the
		// compare makes the server evaluate a condition first.
		_, err = c.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), ">", 0)).
			Then(clientv3.OpPut(key, b.value)).
			Else(clientv3.OpPut(key, b.value)).
			Commit()
	case "mixed":
		if rng.Float64() < 0.8 {
			_, err = c.Get(ctx, key)
		} else {
			_, err = c.Put(ctx, key, b.value)
		}
	}
	return err
}

// phase runs `workload` with exactly b.clients requests in flight until
// `n` requests were issued (n > 0) or `until` passed.
func (b *bench) phase(workload string, n uint64, until time.Time) *tally {
	var issued uint64
	var wg sync.WaitGroup
	tallies := make([]*tally, b.clients)
	for i := 0; i < b.clients; i++ {
		t := &tally{messages: map[string]bool{}}
		tallies[i] = t
		c := b.kvs[i%len(b.kvs)]
		rng := rand.New(rand.NewSource(time.Now().UnixNano() + int64(i)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if n > 0 {
					if atomic.AddUint64(&issued, 1) > n {
						return
					}
				} else if !time.Now().Before(until) {
					return
				}
				key := b.key(rng)
				ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
				started := time.Now()
				err := b.request(ctx, c, workload, key, rng)
				latency := time.Since(started)
				cancel()
				t.requests++
				if err != nil {
					t.fail(err)
					continue
				}
				us := latency.Microseconds()
				if us > math.MaxUint32 {
					us = math.MaxUint32
				}
				t.latenciesUs = append(t.latenciesUs, uint32(us))
			}
		}()
	}
	wg.Wait()
	total := &tally{messages: map[string]bool{}}
	for _, t := range tallies {
		total.merge(t)
	}
	return total
}

// populate writes every key once, unmeasured, before the read workloads.
func (b *bench) populate() error {
	var next uint64
	var wg sync.WaitGroup
	var failed, done uint64
	var firstErr atomic.Value
	for i := 0; i < b.clients; i++ {
		c := b.kvs[i%len(b.kvs)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				index := atomic.AddUint64(&next, 1) - 1
				if index >= b.keySpace {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
				_, err := c.Put(ctx, fmt.Sprintf("%0*d", b.keySize, index), b.value)
				cancel()
				atomic.AddUint64(&done, 1)
				if err != nil {
					atomic.AddUint64(&failed, 1)
					firstErr.Store(err.Error())
				}
			}
		}()
	}
	wg.Wait()
	if failed == done && failed > 0 {
		return fmt.Errorf("could not write any key: %v", firstErr.Load())
	}
	return nil
}

// clockTicksPerSecond is the unit of utime and stime in /proc/<pid>/stat
// (USER_HZ, 100 on every Linux architecture).
const clockTicksPerSecond = 100.0

// cpuTicks is the CPU time (user + system, all threads) the processes have
// used so far, in clock ticks. The command name (field 2) may hold spaces
// and parentheses; the fields after its last ')' start with the state
// (field 3); utime and stime are fields 14 and 15.
func cpuTicks(pids []int) (uint64, error) {
	var total uint64
	for _, pid := range pids {
		path := fmt.Sprintf("/proc/%d/stat", pid)
		raw, err := os.ReadFile(path)
		if err != nil {
			return 0, err
		}
		stat := string(raw)
		fields := strings.Fields(stat[strings.LastIndexByte(stat, ')')+1:])
		if len(fields) < 15-2 {
			return 0, fmt.Errorf("%s has no utime/stime fields", path)
		}
		for _, f := range fields[14-3 : 15-2] {
			n, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %v", path, err)
			}
			total += n
		}
	}
	return total, nil
}

func summarize(workload string, t *tally, elapsed time.Duration) result {
	lat := t.latenciesUs
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(q float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		rank := int(math.Ceil(q * float64(len(lat))))
		if rank < 1 {
			rank = 1
		}
		if rank > len(lat) {
			rank = len(lat)
		}
		return float64(lat[rank-1]) / 1000
	}
	r := result{
		Workload:    workload,
		Requests:    t.requests,
		Errors:      t.errors,
		ElapsedSecs: elapsed.Seconds(),
		P50Ms:       pct(0.50),
		P90Ms:       pct(0.90),
		P99Ms:       pct(0.99),
		P999Ms:      pct(0.999),
	}
	if len(lat) > 0 {
		var sum float64
		for _, us := range lat {
			sum += float64(us)
		}
		r.MeanMs = sum / float64(len(lat)) / 1000
		r.MaxMs = float64(lat[len(lat)-1]) / 1000
	}
	if r.ElapsedSecs > 0 {
		r.QPS = float64(len(lat)) / r.ElapsedSecs
	}
	for m := range t.messages {
		r.ErrorMessages = append(r.ErrorMessages, m)
	}
	sort.Strings(r.ErrorMessages)
	return r
}

func main() {
	ws := workloads{"put", "range-linearizable", "range-serializable", "txn"}
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "comma-separated client endpoints")
	flag.Var(&ws, "workload", "workloads to run, in order (repeatable or comma-separated)")
	clients := flag.Int("clients", 64, "concurrent clients, one request in flight each")
	conns := flag.Int("conns", 8, "clientv3 clients shared round-robin")
	total := flag.Uint64("total", 20000, "measured requests per workload")
	duration := flag.Duration("duration", 0, "measure each workload this long instead of --total")
	keySize := flag.Int("key-size", 8, "key length in bytes (zero-padded decimals)")
	valSize := flag.Int("val-size", 256, "value length in bytes")
	keySpace := flag.Uint64("key-space", 10000, "distinct keys")
	warmup := flag.Uint64("warmup", 500, "unmeasured warm-up requests per workload")
	timeout := flag.Duration("timeout", 10*time.Second, "per-request timeout")
	format := flag.String("format", "text", "report format: text or json")
	cpuOf := flag.String("cpu-of", "", "comma-separated pids (the members) whose CPU time per request to report for each workload")
	flag.Parse()
	var cpuPids []int
	if *cpuOf != "" {
		for _, p := range strings.Split(*cpuOf, ",") {
			pid, err := strconv.Atoi(p)
			if err != nil {
				fmt.Fprintf(os.Stderr, "gobench: --cpu-of: %q is not a pid\n", p)
				os.Exit(2)
			}
			cpuPids = append(cpuPids, pid)
		}
	}
	readCPU := func() uint64 {
		ticks, err := cpuTicks(cpuPids)
		if err != nil {
			fmt.Fprintf(os.Stderr, "gobench: --cpu-of: %v\n", err)
			os.Exit(1)
		}
		return ticks
	}
	if *clients < 1 || *conns < 1 || *keySpace < 1 || *total < 1 {
		fmt.Fprintln(os.Stderr, "gobench: --clients, --conns, --key-space and --total must be at least 1")
		os.Exit(2)
	}
	if digits := len(fmt.Sprint(*keySpace - 1)); digits > *keySize {
		fmt.Fprintf(os.Stderr, "gobench: --key-space %d needs keys of at least %d bytes\n", *keySpace, digits)
		os.Exit(2)
	}
	eps := strings.Split(*endpoints, ",")
	b := &bench{clients: *clients, keySize: *keySize, keySpace: *keySpace,
		value: strings.Repeat("v", *valSize), timeout: *timeout}
	for i := 0; i < *conns; i++ {
		c, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 15 * time.Second})
		if err != nil {
			fmt.Fprintf(os.Stderr, "gobench: connecting to %s: %v\n", *endpoints, err)
			os.Exit(1)
		}
		defer c.Close()
		b.kvs = append(b.kvs, c)
	}
	fmt.Fprintf(os.Stderr, "gobench (clientv3): %d clients over %d connections to %s\n", *clients, *conns, *endpoints)
	seen := map[string]bool{}
	populated := false
	rep := report{Settings: settings{Endpoints: eps, Clients: *clients, Conns: *conns,
		Warmup: *warmup, KeySize: *keySize, ValSize: *valSize, KeySpace: *keySpace}}
	if *duration > 0 {
		secs := duration.Seconds()
		rep.Settings.DurationSecs = &secs
	} else {
		rep.Settings.Total = total
	}
	exit := 0
	for _, w := range ws {
		if seen[w] {
			continue
		}
		seen[w] = true
		if w != "put" && w != "txn" && !populated {
			if err := b.populate(); err != nil {
				fmt.Fprintf(os.Stderr, "gobench: %v\n", err)
				os.Exit(1)
			}
			populated = true
		}
		if *warmup > 0 {
			b.phase(w, *warmup, time.Time{})
		}
		var cpuBefore uint64
		if cpuPids != nil {
			cpuBefore = readCPU()
		}
		started := time.Now()
		var t *tally
		if *duration > 0 {
			t = b.phase(w, 0, started.Add(*duration))
		} else {
			t = b.phase(w, *total, time.Time{})
		}
		r := summarize(w, t, time.Since(started))
		if cpuPids != nil {
			used := readCPU() - cpuBefore
			perRequest := 0.0
			if r.Requests > 0 {
				perRequest = float64(used) * 1e6 / clockTicksPerSecond / float64(r.Requests)
			}
			r.MembersCPUUsPerRequest = &perRequest
		}
		fmt.Fprintf(os.Stderr, "gobench: %s: %d requests, %d errors, %.2fs, %.0f QPS, p99 %.2f ms\n",
			r.Workload, r.Requests, r.Errors, r.ElapsedSecs, r.QPS, r.P99Ms)
		for _, m := range r.ErrorMessages {
			fmt.Fprintf(os.Stderr, "gobench:   error: %s\n", m)
		}
		if r.Requests > 0 && r.Errors == r.Requests {
			exit = 1
		}
		rep.Results = append(rep.Results, r)
	}
	if *format == "json" {
		out, _ := json.MarshalIndent(rep, "", "  ")
		fmt.Println(string(out))
	} else {
		for _, r := range rep.Results {
			fmt.Printf("%-20s %8.0f QPS  p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms  errors %d\n",
				r.Workload, r.QPS, r.P50Ms, r.P99Ms, r.MaxMs, r.Errors)
		}
	}
	os.Exit(exit)
}
