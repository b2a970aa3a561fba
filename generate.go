package main

// Code generation: `go generate ./...` regenerates everything from openapi.yaml and migrations/ with the tool
// versions pinned in go.mod. Generated files are committed; .ci/run fails when they are stale.

//go:generate go tool oapi-codegen -config api/server.cfg.yaml openapi.yaml
//go:generate go tool oapi-codegen -config api/client.cfg.yaml openapi.yaml
//go:generate go tool sqlc generate
