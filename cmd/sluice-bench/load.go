package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// hist is a log-linear latency histogram in nanoseconds: exact below 256 ns, then 128 buckets per power of two,
// so a recorded value is off by less than 1/128 (0.8%). Recording is an index computation and an increment.
type hist struct {
	counts [histBuckets]uint64
	n      uint64
	sum    uint64
	max    uint64
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits // buckets per power of two
	histBuckets = 2*histSub + (64-histSubBits-1)*histSub
)

func histIndex(v uint64) int {
	msb := bits.Len64(v)
	if msb <= histSubBits+1 {
		return int(v)
	}
	shift := msb - histSubBits - 1
	return 2*histSub + (shift-1)*histSub + int(v>>shift) - histSub
}

// histBounds is the range of values [lo, hi] that land in bucket i.
func histBounds(i int) (lo, hi uint64) {
	if i < 2*histSub {
		return uint64(i), uint64(i)
	}
	shift := uint((i-2*histSub)/histSub + 1)
	r := uint64((i - 2*histSub) % histSub)
	lo = (histSub + r) << shift
	return lo, lo + (1 << shift) - 1
}

func (h *hist) record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[histIndex(v)]++
	h.n++
	h.sum += v
	h.max = max(h.max, v)
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// quantile returns the value at quantile q in [0, 1]: the midpoint of the bucket holding the ceil(q·n)-th value.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := histBounds(i)
			return time.Duration(min(lo+(hi-lo)/2, h.max))
		}
	}
	return time.Duration(h.max)
}

func (h *hist) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / h.n)
}

// loadSpec is one closed-loop run: conns connections, each sending the next request as soon as the previous
// answer is in, for warmup (not measured) and then duration (measured).
type loadSpec struct {
	addr     string
	conns    int
	warmup   time.Duration
	duration time.Duration
	// requests are complete HTTP/1.1 requests, encoded once; each worker picks one uniformly at random.
	requests [][]byte
	// onMeasure and onStop, when set, run as the measured window opens and closes (to profile the server).
	onMeasure, onStop func()
}

// loadResult is what a run measured.
type loadResult struct {
	decisions uint64 // 200 answers completed in the measured window
	allowed   uint64 // of those, admitted
	errors    uint64 // non-200 answers and connection failures in the measured window
	elapsed   time.Duration
	lat       hist
	firstErr  error
}

func (r *loadResult) rate() float64 { return float64(r.decisions) / r.elapsed.Seconds() }

const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseStop
)

// checkRequest encodes POST /v1/check for (policy, key) once.
func checkRequest(host, policy, key string) []byte {
	body := `{"policy":` + strconv.Quote(policy) + `,"key":` + strconv.Quote(key) + `}`
	return []byte("POST /v1/check HTTP/1.1\r\nHost: " + host + "\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}

// runLoad drives spec.addr and returns the measured result. The client is a minimal HTTP/1.1 reader over one
// persistent connection per worker, so the load generator, which shares the machine's cores with the server,
// spends as little CPU as it can: requests are pre-encoded, and answers are parsed only for the status line,
// Content-Length and whether the body says "allowed":true.
func runLoad(spec loadSpec) (*loadResult, error) {
	if err := requireLoopback(spec.addr); err != nil {
		return nil, err
	}
	var phase atomic.Int32
	var wg sync.WaitGroup
	results := make([]*loadResult, spec.conns)
	var measureStart time.Time
	var measureEnd time.Time
	var dialErr error
	var dialOnce sync.Once
	for i := range spec.conns {
		results[i] = &loadResult{}
		conn, err := net.Dial("tcp", spec.addr)
		if err != nil {
			dialOnce.Do(func() { dialErr = err })
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			worker(conn, spec, uint64(i)*0x9e3779b97f4a7c15+1, &phase, results[i])
		}()
	}
	if dialErr != nil {
		phase.Store(phaseStop)
		wg.Wait()
		return nil, fmt.Errorf("connect to %s: %w", spec.addr, dialErr)
	}
	time.Sleep(spec.warmup)
	if spec.onMeasure != nil {
		spec.onMeasure()
	}
	measureStart = time.Now()
	phase.Store(phaseMeasure)
	time.Sleep(spec.duration)
	phase.Store(phaseStop)
	measureEnd = time.Now()
	if spec.onStop != nil {
		spec.onStop()
	}
	wg.Wait()
	total := &loadResult{elapsed: measureEnd.Sub(measureStart)}
	for _, r := range results {
		total.decisions += r.decisions
		total.allowed += r.allowed
		total.errors += r.errors
		total.lat.merge(&r.lat)
		if total.firstErr == nil {
			total.firstErr = r.firstErr
		}
	}
	return total, nil
}

func worker(conn net.Conn, spec loadSpec, seed uint64, phase *atomic.Int32, res *loadResult) {
	defer func() { conn.Close() }()
	br := bufio.NewReaderSize(conn, 8<<10)
	rng := seed
	n := uint64(len(spec.requests))
	for {
		p := phase.Load()
		if p == phaseStop {
			return
		}
		// xorshift64*: cheap and good enough to spread keys uniformly.
		rng ^= rng >> 12
		rng ^= rng << 25
		rng ^= rng >> 27
		req := spec.requests[(rng*0x2545f4914f6cdd1d)%n]
		start := time.Now()
		allowed, err := roundTrip(conn, br, req)
		lat := time.Since(start)
		if phase.Load() != phaseMeasure || p != phaseMeasure {
			if err != nil { // reconnect and go on; warm-up errors are not counted
				conn.Close()
				if conn, err = net.Dial("tcp", spec.addr); err != nil {
					res.firstErr = err
					return
				}
				br.Reset(conn)
			}
			continue
		}
		if err != nil {
			res.errors++
			if res.firstErr == nil {
				res.firstErr = err
			}
			conn.Close()
			if conn, err = net.Dial("tcp", spec.addr); err != nil {
				return
			}
			br.Reset(conn)
			continue
		}
		res.decisions++
		if allowed {
			res.allowed++
		}
		res.lat.record(lat)
	}
}

var (
	allowedTrue   = []byte(`"allowed":true`)
	contentLength = []byte("content-length:")
)

// roundTrip writes one request and reads its answer, reporting whether the decision admitted it.
func roundTrip(w io.Writer, br *bufio.Reader, req []byte) (bool, error) {
	if _, err := w.Write(req); err != nil {
		return false, err
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return false, fmt.Errorf("malformed status line %q", line)
	}
	ok := string(line[9:12]) == "200"
	status := string(line[9:12])
	length := -1
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return false, err
		}
		if len(line) <= 2 {
			break
		}
		if len(line) > len(contentLength) && bytes.EqualFold(line[:len(contentLength)], contentLength) {
			length, err = strconv.Atoi(string(bytes.TrimSpace(line[len(contentLength):])))
			if err != nil {
				return false, fmt.Errorf("bad Content-Length %q", line)
			}
		}
	}
	if length < 0 {
		return false, errors.New("answer without Content-Length")
	}
	allowed := false
	if length <= br.Size() {
		body, err := br.Peek(length)
		if err != nil {
			return false, err
		}
		allowed = bytes.Contains(body, allowedTrue)
		if !ok {
			return false, fmt.Errorf("status %s: %s", status, body)
		}
	}
	if _, err := br.Discard(length); err != nil {
		return false, err
	}
	if !ok {
		return false, fmt.Errorf("status %s", status)
	}
	return allowed, nil
}

// requireLoopback refuses any target that is not on this machine's loopback: the tool is a load generator, and
// load is only ever sent to servers it started itself.
func requireLoopback(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("refusing to send load to %s: only loopback addresses (127.0.0.0/8, ::1, localhost) are allowed", hostport)
	}
	return nil
}
