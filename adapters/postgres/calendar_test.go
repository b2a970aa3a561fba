package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/postgres"
	"github.com/sluice-dev/sluice/domain"
)

// This store does not decide calendar periods yet: an API policy with one is a validation problem naming period,
// and nothing is stored (the conformance suite checks that a calendar rule reaching a check or a hold is an invalid
// rule recording nothing).
func TestCalendarPolicyRefused(t *testing.T) {
	s := open(t, postgres.Options{})
	pol := domain.Policy{Name: "monthly", Limit: 5, Period: &domain.Calendar{Unit: domain.CalendarMonth}}.WithDefaults()
	_, err := s.PutPolicy(context.Background(), pol)
	var ve *domain.ValidationError
	if !errors.As(err, &ve) || len(ve.Fields) != 1 || ve.Fields[0].Field != "period" {
		t.Fatalf("PutPolicy of a calendar policy: %v, want a validation problem naming period", err)
	}
	window := domain.Policy{Name: "monthly", Limit: 5, Window: time.Hour}.WithDefaults()
	if created, err := s.PutPolicy(context.Background(), window); err != nil || !created {
		t.Fatalf("the refused policy was stored: a window policy of its name created=%v, %v", created, err)
	}
}
