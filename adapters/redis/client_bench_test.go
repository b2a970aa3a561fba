package redis

// The client comparison behind the package's choice of rueidis (see the package doc): one EVALSHA decision loop
// against the same local Redis, both clients in the same run, GOMAXPROCS goroutines × parallelism 8 each, a
// small script that reads TIME and increments a key (the shape of a decision: one script, one key, a few args).
//
//	go test -run '^$' -bench BenchmarkClient -benchtime 3s ./adapters/redis/

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/sluice-dev/sluice/adapters/redis/redistest"
)

const benchScript = `local t = redis.call('TIME')
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], 60000)
return {n, t[1]}`

func BenchmarkClient(b *testing.B) {
	addr := redistest.SingleAddr(b)
	ctx := context.Background()
	b.Run("rueidis", func(b *testing.B) {
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		lua := rueidis.NewLuaScript(benchScript)
		var n atomic.Int64
		b.SetParallelism(8)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				k := fmt.Sprintf("{bench}%d", n.Add(1)%1024)
				if err := lua.Exec(ctx, c, []string{k}, []string{"1"}).Error(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("go-redis", func(b *testing.B) {
		c := goredis.NewClient(&goredis.Options{Addr: addr, PoolSize: 64})
		defer c.Close()
		s := goredis.NewScript(benchScript)
		var n atomic.Int64
		b.SetParallelism(8)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				k := fmt.Sprintf("{bench}%d", n.Add(1)%1024)
				if err := s.Run(ctx, c, []string{k}, 1).Err(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
