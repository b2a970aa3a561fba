// Package console holds the console's browser test: sluice runs in-process with the memory store, Debian's chromium
// runs headless with a profile of its own, and chromedp drives the page at /ui as an operator would (sign in with a
// token, find the denied key in the top keys, inspect it, reset it, watch the chart, edit policies). With CI=true
// the test fails when chromium is missing; scripts/test.d/14-chromium-install.sh installs it. With
// SLUICE_UPDATE_SCREENSHOTS=1 it rewrites the screenshots in docs/img/.
package console
