package httpapi

import (
	"context"
	"fmt"

	"github.com/sluice-dev/sluice/api"
	"github.com/sluice-dev/sluice/domain"
)

// The overrides of a policy (domain/override.go): GET /v1/policies/{name}/overrides and GET, PUT, DELETE
// /v1/policies/{name}/overrides/{match}, all admin routes.

func overrideBody(o domain.Override) api.Override {
	out := api.Override{Match: o.Match, Limit: o.Limit}
	if o.Window != 0 {
		w := domain.FormatDuration(o.Window)
		out.Window = &w
	}
	return out
}

// ListOverrides implements GET /v1/policies/{name}/overrides.
func (s *server) ListOverrides(ctx context.Context, req api.ListOverridesRequestObject) (api.ListOverridesResponseObject, error) {
	limit, after := 100, ""
	if req.Params.Limit != nil {
		limit = *req.Params.Limit
	}
	if limit < 1 || limit > 1000 {
		return nil, domain.Invalid("limit", fmt.Sprintf("must be 1 to 1000, got %d", limit))
	}
	if req.Params.After != nil {
		after = *req.Params.After
	}
	ovs, more, err := s.lim.ListOverrides(ctx, req.Name, after, limit)
	if err != nil {
		return nil, err
	}
	out := api.OverridePage{Overrides: make([]api.Override, len(ovs))}
	for i, o := range ovs {
		out.Overrides[i] = overrideBody(o)
	}
	if more {
		next := ovs[len(ovs)-1].Match
		out.Next = &next
	}
	return api.ListOverrides200JSONResponse(out), nil
}

// GetOverride implements GET /v1/policies/{name}/overrides/{match}.
func (s *server) GetOverride(ctx context.Context, req api.GetOverrideRequestObject) (api.GetOverrideResponseObject, error) {
	o, err := s.lim.GetOverride(ctx, req.Name, req.Match)
	if err != nil {
		return nil, err
	}
	return api.GetOverride200JSONResponse(overrideBody(o)), nil
}

// PutOverride implements PUT /v1/policies/{name}/overrides/{match}: a window that does not parse is reported with
// the domain's verdict on the other fields.
func (s *server) PutOverride(ctx context.Context, req api.PutOverrideRequestObject) (api.PutOverrideResponseObject, error) {
	o := domain.Override{Match: req.Match, Limit: req.Body.Limit}
	unparsed := &domain.ValidationError{}
	if req.Body.Window != nil {
		w, err := domain.ParseDuration(*req.Body.Window)
		if err != nil {
			unparsed.Add("window", err.Error())
		}
		o.Window = w
		if o.Window == 0 && err == nil {
			unparsed.Add("window", "must be between 1s and 31d (leave it out for the window the keys would have without this override)")
		}
	}
	if len(unparsed.Fields) > 0 {
		// Nothing is changed; the other fields are judged as the domain would judge them.
		o.Window = 0
		if ve, ok := domain.ValidateOverride(domain.Policy{}, o, "").(*domain.ValidationError); ok {
			unparsed.Fields = append(unparsed.Fields, ve.Fields...)
		}
		return nil, unparsed
	}
	created, err := s.lim.PutOverride(ctx, req.Name, o)
	if err != nil {
		return nil, err
	}
	if created {
		return api.PutOverride201JSONResponse(overrideBody(o)), nil
	}
	return api.PutOverride200JSONResponse(overrideBody(o)), nil
}

// DeleteOverride implements DELETE /v1/policies/{name}/overrides/{match}.
func (s *server) DeleteOverride(ctx context.Context, req api.DeleteOverrideRequestObject) (api.DeleteOverrideResponseObject, error) {
	if err := s.lim.DeleteOverride(ctx, req.Name, req.Match); err != nil {
		return nil, err
	}
	return api.DeleteOverride204Response{}, nil
}
