"""One GET with Python's urllib or requests, using only the proxy variables of the environment.

    python3 py_client.py urllib|requests URL [CAFILE]

Prints `status=`, `x-proxy-reason=` and `body=` lines (or `error=`), and exits 0 on a 200,
1 on any other HTTP status, 2 when the request failed before a response (e.g. a refused
CONNECT tunnel), 3 when the library is not importable.
"""

import ssl
import sys
import urllib.error
import urllib.request

TIMEOUT = 10


def show(status, headers, body):
    print(f"status={status}")
    print(f"x-proxy-reason={headers.get('x-proxy-reason', '')}")
    print(f"x-proxy-error={headers.get('x-proxy-error', '')}")
    print(f"body={body.strip()}")
    return 0 if status == 200 else 1


def with_urllib(url, cafile):
    # urlopen's default opener reads http_proxy/https_proxy (and no_proxy) from the
    # environment; nothing here names the proxy.
    print(f"proxies={urllib.request.getproxies()}")
    context = ssl.create_default_context(cafile=cafile) if cafile else None
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT, context=context) as response:
            return show(response.status, response.headers, response.read().decode())
    except urllib.error.HTTPError as err:
        return show(err.code, err.headers, err.read().decode(errors="replace"))
    except (urllib.error.URLError, OSError) as err:
        print(f"error={err}")
        return 2


def with_requests(url, cafile):
    try:
        import requests
    except ImportError:
        print("error=requests is not importable")
        return 3
    # trust_env (the default) makes requests read the proxy variables.
    session = requests.Session()
    print(f"proxies={requests.utils.get_environ_proxies(url)}")
    try:
        response = session.get(url, timeout=TIMEOUT, verify=cafile or True)
    except requests.RequestException as err:
        print(f"error={err}")
        return 2
    return show(response.status_code, response.headers, response.text)


def main():
    lib, url = sys.argv[1], sys.argv[2]
    cafile = sys.argv[3] if len(sys.argv) > 3 else None
    return {"urllib": with_urllib, "requests": with_requests}[lib](url, cafile)


if __name__ == "__main__":
    sys.exit(main())
