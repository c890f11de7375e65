// OpenSSL's libcrypto message-digest API (Debian: libssl-dev): sha256 on platforms without CryptoKit.
#pragma once
#include <openssl/evp.h>
