package xtce

import "testing"

// TestNamesCollide: two dictionary names that XTCE would spell alike are
// refused, not written as one item.
func TestNamesCollide(t *testing.T) {
	ns := names{}
	if n, err := ns.take("hk.a"); err != nil || n != "hk_a" {
		t.Fatalf("hk.a: %q, %v", n, err)
	}
	if _, err := ns.take("hk_a"); err == nil {
		t.Errorf("hk_a after hk.a: no error")
	}
	if n, err := ns.take("a b/c:d[e]"); err != nil || n != "a_b_c_d_e_" {
		t.Errorf("forbidden characters: %q, %v", n, err)
	}
}
