package client

// Hand-written (not generated): the generated GetKey and ResetKey lose the keys "." and "..". They escape the
// key with url.PathEscape, which leaves dots alone, and resolve the path against the server URL, which removes
// dot segments (RFC 3986 §5.2.4): GET /v1/policies/login/keys/.. becomes GET /v1/policies/login/. The
// functions here send such a key with its dots percent-encoded (%2E), which the server reads back as the key.
// Every other key is sent exactly as the generated code sends it.

import (
	"context"
	"net/http"
	"strings"
)

// isDotSegment reports whether key is a path segment that URL resolution removes.
func isDotSegment(key string) bool { return key == "." || key == ".." }

// dotSafe builds a request with newRequest (a generated New...Request for a path ending in {key}) that keeps
// key even when it is "." or "..".
func dotSafe(newRequest func(server string, name PolicyName, key Key) (*http.Request, error), server string, name PolicyName, key Key) (*http.Request, error) {
	if !isDotSegment(key) {
		return newRequest(server, name, key)
	}
	const placeholder = "_" // a plain segment, kept as is by escaping and resolution
	req, err := newRequest(server, name, placeholder)
	if err != nil {
		return nil, err
	}
	escaped := strings.TrimSuffix(req.URL.EscapedPath(), placeholder) + strings.Repeat("%2E", len(key))
	req.URL.Path = strings.TrimSuffix(req.URL.Path, placeholder) + key
	req.URL.RawPath = escaped
	return req, nil
}

// NewGetKeyRequestDotSafe is NewGetKeyRequest for every key, "." and ".." included.
func NewGetKeyRequestDotSafe(server string, name PolicyName, key Key) (*http.Request, error) {
	return dotSafe(NewGetKeyRequest, server, name, key)
}

// NewResetKeyRequestDotSafe is NewResetKeyRequest for every key, "." and ".." included.
func NewResetKeyRequestDotSafe(server string, name PolicyName, key Key) (*http.Request, error) {
	return dotSafe(NewResetKeyRequest, server, name, key)
}

func (c *Client) send(ctx context.Context, req *http.Request, reqEditors []RequestEditorFn) (*http.Response, error) {
	req = req.WithContext(ctx)
	if err := c.applyEditors(ctx, req, reqEditors); err != nil {
		return nil, err
	}
	return c.Client.Do(req)
}

// GetKeyDotSafe is GetKey for every key, "." and ".." included: use it for keys you do not choose.
func (c *Client) GetKeyDotSafe(ctx context.Context, name PolicyName, key Key, reqEditors ...RequestEditorFn) (*http.Response, error) {
	req, err := NewGetKeyRequestDotSafe(c.Server, name, key)
	if err != nil {
		return nil, err
	}
	return c.send(ctx, req, reqEditors)
}

// ResetKeyDotSafe is ResetKey for every key, "." and ".." included: use it for keys you do not choose.
func (c *Client) ResetKeyDotSafe(ctx context.Context, name PolicyName, key Key, reqEditors ...RequestEditorFn) (*http.Response, error) {
	req, err := NewResetKeyRequestDotSafe(c.Server, name, key)
	if err != nil {
		return nil, err
	}
	return c.send(ctx, req, reqEditors)
}

// dotSafeClient is what the DotSafe methods of ClientWithResponses need: a *Client made by NewClient or
// NewClientWithResponses.
func (c *ClientWithResponses) dotSafeClient() (*Client, error) {
	cl, ok := c.ClientInterface.(*Client)
	if !ok {
		return nil, errNotAClient
	}
	return cl, nil
}

type clientError string

func (e clientError) Error() string { return string(e) }

const errNotAClient = clientError("client: the DotSafe methods need a ClientWithResponses made by NewClientWithResponses")

// GetKeyDotSafeWithResponse is GetKeyWithResponse for every key, "." and ".." included.
func (c *ClientWithResponses) GetKeyDotSafeWithResponse(ctx context.Context, name PolicyName, key Key, reqEditors ...RequestEditorFn) (*GetKeyResponse, error) {
	cl, err := c.dotSafeClient()
	if err != nil {
		return nil, err
	}
	rsp, err := cl.GetKeyDotSafe(ctx, name, key, reqEditors...)
	if err != nil {
		return nil, err
	}
	return ParseGetKeyResponse(rsp)
}

// ResetKeyDotSafeWithResponse is ResetKeyWithResponse for every key, "." and ".." included.
func (c *ClientWithResponses) ResetKeyDotSafeWithResponse(ctx context.Context, name PolicyName, key Key, reqEditors ...RequestEditorFn) (*ResetKeyResponse, error) {
	cl, err := c.dotSafeClient()
	if err != nil {
		return nil, err
	}
	rsp, err := cl.ResetKeyDotSafe(ctx, name, key, reqEditors...)
	if err != nil {
		return nil, err
	}
	return ParseResetKeyResponse(rsp)
}
