package identity

import (
	"errors"
	"strings"
	"testing"
)

func TestParseIDRoundTrip(t *testing.T) {
	id, err := ServiceID("micromesh.local", "default", "hello")
	if err != nil {
		t.Fatal(err)
	}
	const want = "spiffe://micromesh.local/ns/default/svc/hello"
	if id.String() != want || id.URL().String() != want {
		t.Fatalf("String() = %q, URL() = %q, want %q", id.String(), id.URL(), want)
	}
	back, err := ParseID(want)
	if err != nil || back != id {
		t.Fatalf("ParseID(%q) = %v, %v; want %v", want, back, err, id)
	}
}

func TestParseIDRejects(t *testing.T) {
	for _, s := range []string{
		"",
		"https://micromesh.local/ns/default/svc/hello",
		"spiffe://micromesh.local/ns/default/svc",
		"spiffe://micromesh.local/ns/default/svc/hello/extra",
		"spiffe://micromesh.local/namespace/default/svc/hello",
		"spiffe://micromesh.local/ns/default/pod/hello",
		"spiffe://micromesh.local/ns/Default/svc/hello",
		"spiffe://micromesh.local/ns/default/svc/hello_world",
		"spiffe://micromesh.local:8443/ns/default/svc/hello",
		"spiffe://user@micromesh.local/ns/default/svc/hello",
		"spiffe://micromesh.local/ns/default/svc/hello?x=1",
		"spiffe://MICROMESH.local/ns/default/svc/hello",
	} {
		if _, err := ParseID(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseID(%q) error = %v, want one wrapping ErrInvalid", s, err)
		}
	}
}

func TestValidateName(t *testing.T) {
	good := []string{"a", "hello", "hello-world", "a1", "1a", strings.Repeat("x", 63)}
	bad := []string{"", "-a", "a-", "Hello", "hello_world", "hello.world", "héllo", strings.Repeat("x", 64), "a b"}
	for _, s := range good {
		if err := ValidateName("service name", s); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", s, err)
		}
	}
	for _, s := range bad {
		err := ValidateName("service name", s)
		if !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalidName", s, err)
		} else if !strings.Contains(err.Error(), "service name") {
			t.Errorf("ValidateName(%q) message %q does not say which field", s, err)
		}
	}
}

func TestValidateTrustDomain(t *testing.T) {
	for _, td := range []string{"micromesh.local", "example.org", "a"} {
		if err := ValidateTrustDomain(td); err != nil {
			t.Errorf("ValidateTrustDomain(%q) = %v", td, err)
		}
	}
	for _, td := range []string{"", "micromesh..local", ".local", "Micromesh.local", "mesh_1.local"} {
		if err := ValidateTrustDomain(td); !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateTrustDomain(%q) = %v, want ErrInvalidName", td, err)
		}
	}
}
