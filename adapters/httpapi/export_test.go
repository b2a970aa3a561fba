package httpapi

// EncodeHandle is encodeHandle, for the tests of package httpapi_test.
var EncodeHandle = encodeHandle
