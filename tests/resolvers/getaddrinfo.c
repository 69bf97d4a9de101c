/* getaddrinfo NAME: resolve NAME the way applications do, with the C library it is linked to.
 *
 * Built twice by tests/test_stub_resolvers.py: with musl-gcc -static (Alpine's resolver) and
 * with the system cc (glibc). Asks getaddrinfo(NAME, AF_UNSPEC, SOCK_STREAM, AI_CANONNAME):
 * no AI_ADDRCONFIG, so both libraries send an A and an AAAA query for every name they try.
 *
 * Prints "canon <canonical name>" (when the library gives one), then one address per line,
 * and exits 0; on failure prints "error <EAI_NAME> <code> <gai_strerror text>" and exits 2
 * (getent's exit code for "not found").
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static const char *eai_name(int code)
{
    switch (code) {
    case EAI_NONAME: return "EAI_NONAME";
    case EAI_AGAIN: return "EAI_AGAIN";
    case EAI_FAIL: return "EAI_FAIL";
    case EAI_FAMILY: return "EAI_FAMILY";
    case EAI_SERVICE: return "EAI_SERVICE";
    case EAI_MEMORY: return "EAI_MEMORY";
    case EAI_SYSTEM: return "EAI_SYSTEM";
#ifdef EAI_NODATA
    case EAI_NODATA: return "EAI_NODATA";
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY: return "EAI_ADDRFAMILY";
#endif
    default: return "EAI_OTHER";
    }
}

int main(int argc, char **argv)
{
    struct addrinfo hints, *result, *ai;
    char text[INET6_ADDRSTRLEN];
    int code;

    if (argc != 2) {
        fprintf(stderr, "usage: %s NAME\n", argv[0]);
        return 64;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_CANONNAME;
    code = getaddrinfo(argv[1], NULL, &hints, &result);
    if (code != 0) {
        printf("error %s %d %s\n", eai_name(code), code, gai_strerror(code));
        return 2;
    }
    if (result->ai_canonname != NULL)
        printf("canon %s\n", result->ai_canonname);
    for (ai = result; ai != NULL; ai = ai->ai_next) {
        const void *address;
        if (ai->ai_family == AF_INET)
            address = &((struct sockaddr_in *)ai->ai_addr)->sin_addr;
        else if (ai->ai_family == AF_INET6)
            address = &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        else
            continue;
        if (inet_ntop(ai->ai_family, address, text, sizeof text) != NULL)
            printf("%s\n", text);
    }
    freeaddrinfo(result);
    return 0;
}
