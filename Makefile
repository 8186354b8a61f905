# make release [VERSION=v0.2.0]: static, stripped linux/amd64, arm64 and
# armv7 binaries with SHA256SUMS in dist/ (scripts/release.sh).
# make test: every test, as CI runs them (test.sh).
.PHONY: release test

release:
	VERSION=$(VERSION) scripts/release.sh

test:
	./test.sh
